"""Keeping PyTorch's built-in recurrent and attention code, and autograd where a backward pass
must be written by hand (and threads, which would bring it back), out of graded code.

Students write their own RNN, LSTM and attention; torch's (``nn.LSTM``, ``nn.GRUCell``,
``nn.MultiheadAttention``, ``F.scaled_dot_product_attention``, the aten kernels behind them,
the pure-Python ones in ``torch.ao.nn.quantizable``, torch's decompositions...) are forbidden.
Two checks, which share one notion of what is forbidden (``forbidden_name``):

* ``find_forbidden_in_cells(cells, preamble_imports)`` reads the graded cells (no execution)
  and reports, per unit, every *use* of a forbidden built-in (an import, a name or attribute
  load, a call, ``getattr`` with a constant name, an alias made by assignment, in this cell or
  through an import or alias of another cell), of what only serves to dismantle the runtime
  block (``torch._C``, ``importlib``, ``gc``, ``exec``...), and, for the hand-written backward
  units, of autograd. Mentions (strings, docstrings, comments) are not uses.
* In the sandboxed worker, ``block_for_good()`` (once, before it forks the first unit: every
  unit's process inherits it, before any student code) makes every forbidden entry point raise ``ForbiddenModuleError``
  and record the attempt: raising kernels at the dispatcher for every overload of every
  forbidden operator (``forbidden_aten_ops``) and every dispatch key it has a kernel for;
  forbidden ``nn.Module`` classes and pure-Python implementations disabled in place (their code
  objects replaced, so every reference to them raises); the Python names of the operators
  replaced; a module of torch imported later is blocked as it loads, the operators it registers
  included. ``refuse_autograd(unit)`` does the same for autograd in a hand-written backward
  unit, and ``refuse_threads(unit)`` for new threads in the units of THREADLESS_CELLS (grad
  mode is per thread: a new one starts with autograd on). ``violations()`` lists what was
  attempted, even when the student caught the error: the grader zeroes the unit when it is
  not empty.

In the worker::

    forbidden.prepare()              # once, in the zygote (0.1 s once torch is imported)
    forbidden.block_for_good()       # once, in the worker, before forking the units
    # in each unit's forked process, before any submitted code:
    forbidden.block_for_good(report_fd=None)   # applied already; optional fd: each attempt written at once
    forbidden.refuse_autograd(unit)            # only for HAND_WRITTEN_BACKWARD units
    forbidden.refuse_threads(unit)             # only for THREADLESS_CELLS units
    ...                                        # the unit's code and tests
    forbidden.violations()                     # not empty: the unit scores 0

This file is copied into the sandbox: it imports only torch and the standard library.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import os
import re
import sys
import threading
import types
import warnings

import torch

# ---------------------------------------------------------------------------------------
# What is forbidden, by name
# ---------------------------------------------------------------------------------------

# A name is split into words ("GRUCell" -> gru, cell; "_scaled_dot_product_flash_attention"
# -> scaled, dot, product, flash, attention); it names a recurrent cell or layer, an attention
# or a transformer when one of its words is one of these (or it holds "multi_head").
FORBIDDEN_WORDS = frozenset({
    "rnn", "lstm", "gru", "cell",  # recurrent cells and layers (cudnn/miopen/mkldnn rnn too)
    "attention", "attn", "sdp", "sdpa", "multihead", "qkv",  # attention and its fused kernels
    "transformer",  # transformer layers (which hold attention)
})

# Operators whose names contain a forbidden word but which compute nothing a student could
# use in their place; blocking them would only risk breaking torch itself.
EXCLUDED_OPS = {
    # Returns which fused SDPA kernel *would* be chosen for given inputs (an int). It is a
    # query, not an attention; the kernels themselves are all forbidden.
    "aten::_fused_sdp_choice": "chooses a kernel (returns an int), computes no attention",
    # Returns whether cuDNN would flatten an RNN's weights (a bool); cuDNN's RNN is forbidden.
    "aten::_use_cudnn_rnn_flatten_weight": "answers a yes/no question, computes no RNN",
}

# Paths under torch whose names contain a forbidden word but which are harmless utilities.
ALLOWED_PATHS = (
    "torch.nn.utils.rnn",  # pad_sequence, pack_padded_sequence, PackedSequence: padding helpers
)

# Only the backward pass of these units must be written by hand; the cells whose code runs in
# their process (the unit's own forward, for its cache; the step functions) may not use autograd.
HAND_WRITTEN_BACKWARD = {
    "rnn_step_backward": ("rnn_step_forward", "rnn_step_backward"),
    "rnn_backward": ("rnn_step_forward", "rnn_step_backward", "rnn_forward", "rnn_backward"),
}
# The cells whose code runs in the process of a hand-written backward pass. Autograd is off
# there for the main thread only (grad mode is per thread), so none of them may start a
# thread: in their own units too, so that the cell that starts one loses its own points
# (and the backward passes, judged again with the grader's forward, keep theirs).
THREADLESS_CELLS = tuple(dict.fromkeys(c for cells in HAND_WRITTEN_BACKWARD.values() for c in cells))


def threads_refused(cell: str, route: str = "") -> str:
    """The thread rule, as a student reads it wherever it is enforced (the static screen, with
    the module used as route, and the runtime refusal)."""
    return (f"threads are not allowed in {cell}{f' ({route})' if route else ''}: its code runs inside "
            "the backward passes you write by hand, where autograd is off, and a new thread would have it on")

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def name_words(name: str) -> list[str]:
    """The lower-case words of an identifier: snake_case and CamelCase both split."""
    return [w for w in _CAMEL.sub("_", name).lower().split("_") if w]


_QUICK = re.compile(r"rnn|lstm|gru|cell|att|sdp|multi|qkv|transformer", re.I)  # a fast first test


def forbidden_name(name: str) -> bool:
    """Whether an identifier names a recurrent cell or layer, an attention or a transformer."""
    if not _QUICK.search(name):
        return False
    words = name_words(name)
    if any(w in FORBIDDEN_WORDS for w in words):
        return True
    return any(a == "multi" and b == "head" for a, b in zip(words, words[1:]))


class ForbiddenModuleError(RuntimeError):
    """Raised when graded code calls a forbidden built-in (or autograd where it is refused)."""


# Packages imported before blocking, so that what they define exists when the plan is made.
# A module of torch imported only after the block is blocked as it loads (_SweepingLoader):
# torch.nn.attention.varlen is left to that, since importing it means torch._dynamo, 0.7-1.1 s
# of every zygote's start for a module only a forbidden attempt would import.
_EXTRA_IMPORTS = (
    "torch.ao.nn.quantizable", "torch.ao.nn.quantized", "torch.ao.nn.quantized.dynamic",
    "torch.ao.nn.quantized.reference", "torch.nn.attention.flex_attention",
    "torch.onnx.ops", "torch._decomp.decompositions",
    "torch._higher_order_ops.flex_attention", "torch._functorch.eager_transforms",
    "torch.autograd.functional", "torch.autograd.forward_ad", "torch.func",
)


def _import_extras() -> None:
    for name in _EXTRA_IMPORTS:
        try:
            importlib.import_module(name)
        except Exception:  # an older or smaller torch: nothing there to block
            pass


def forbidden_aten_ops() -> tuple[str, ...]:
    """Every operator in torch's dispatcher registry (aten, quantized, mkldnn, onnx...) that
    implements a recurrent cell or layer, an attention or a transformer layer: the names
    ("aten::lstm_cell", no overload) whose words include one of FORBIDDEN_WORDS, less
    EXCLUDED_OPS. Their backward operators are included (they match too)."""
    _import_extras()
    return _forbidden_among(torch._C._dispatch_get_all_op_names())


def _forbidden_among(qualified_names) -> tuple[str, ...]:
    """The forbidden operators ("ns::name", no overload) among the registry names given."""
    names = {n.split(".")[0] for n in qualified_names}
    return tuple(sorted(n for n in names if forbidden_name(n.split("::", 1)[-1]) and n not in EXCLUDED_OPS))


# ---------------------------------------------------------------------------------------
# Recording attempts
# ---------------------------------------------------------------------------------------

_VIOLATIONS: list[str] = []
_REPORT = {"fd": None}
_write = os.write  # bound now: student code replacing os.write changes nothing here
_getframe = sys._getframe
_append = _VIOLATIONS.append


def violations() -> list[str]:
    """What graded code tried to use since block_for_good / refuse_autograd, in order, once each."""
    return list(dict.fromkeys(_VIOLATIONS))


def _record(what: str) -> None:
    _append(what)
    fd = _REPORT["fd"]
    if fd is not None:
        try:
            _write(fd, (what + "\n").encode("utf-8", "backslashreplace"))
        except OSError:
            pass


def _forbidden_raiser(what: str):
    message = f"{what} is not allowed in this assignment: write it yourself"

    def forbidden(*args, **kwargs):
        _record(what)
        raise ForbiddenModuleError(message)
    forbidden.__name__ = forbidden.__qualname__ = "forbidden"
    return forbidden


def _autograd_raiser(what: str, unit: str):
    message = f"{unit} must be written by hand: autograd is not available here ({what} was called)"

    def refused(*args, **kwargs):
        _record(what)
        raise ForbiddenModuleError(message)
    refused.__name__ = refused.__qualname__ = "refused"
    return refused


# ---------------------------------------------------------------------------------------
# Disabling Python functions in place
# ---------------------------------------------------------------------------------------

_TEMPLATES: dict[int, types.CodeType] = {}


def _template(free: int) -> types.CodeType:
    """A code object with `free` free variables (never read) that calls its keyword-only
    argument __forbidden__ (given by __kwdefaults__) and ignores every other argument."""
    if free not in _TEMPLATES:
        names = [f"_v{i}" for i in range(free)]
        source = (
            "def _outer():\n"
            + "".join(f"    {n} = None\n" for n in names)
            + "    def disabled(*args, __forbidden__, **kwargs):\n"
            + (f"        ({', '.join(names)},)\n" if names else "")
            + "        return __forbidden__()\n"
            + "    return disabled\n"
        )
        scope: dict = {}
        exec(compile(source, "<forbidden>", "exec"), scope)
        _TEMPLATES[free] = scope["_outer"]().__code__
    return _TEMPLATES[free]


_DISABLED: set[int] = set()
_FOREVER: list = []  # what must live as long as the process: libraries, raisers, originals


def _disable_function(fn, raiser) -> bool:
    """Make a pure-Python function raise, wherever it is referenced from: its code is
    replaced in place. Follows __wrapped__. False when fn is not a Python function."""
    done = False
    while isinstance(fn, types.FunctionType) and id(fn) not in _DISABLED:
        _DISABLED.add(id(fn))
        _FOREVER.append(fn)
        wrapped = fn.__dict__.get("__wrapped__")
        fn.__code__ = _template(len(fn.__code__.co_freevars))
        fn.__kwdefaults__ = {"__forbidden__": raiser}
        fn.__defaults__ = None
        done = True
        fn = wrapped
    return done


def _functions_of(value):
    """The Python functions behind a class attribute (staticmethod, classmethod, property)."""
    if isinstance(value, (staticmethod, classmethod)):
        return [value.__func__]
    if isinstance(value, property):
        return [f for f in (value.fget, value.fset, value.fdel) if f is not None]
    if isinstance(value, types.FunctionType):
        return [value]
    return []


def _public_name(obj) -> str:
    """torch.nn.LSTM rather than torch.nn.modules.rnn.LSTM: the shortest package path that
    exposes obj under its own name."""
    module = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?")
    parts = module.split(".")
    for i in range(2, len(parts)):
        package = sys.modules.get(".".join(parts[:i]))
        if package is not None and "." not in name and vars(package).get(name) is obj:
            return f"{'.'.join(parts[:i])}.{name}"
    return f"{module}.{name}" if module else name


# ---------------------------------------------------------------------------------------
# block_for_good
# ---------------------------------------------------------------------------------------

# Packages whose module-level functions named like a forbidden thing are implementations of it
# (decompositions, higher-order operators, functional forms, torchvision's window attention).
_FUNCTION_PACKAGES = (
    "torch.nn.functional", "torch.nn.modules", "torch.nn.attention.flex_attention",
    "torch.nn.attention.varlen", "torch.nn.attention.experimental", "torch.nn.attention._fa3",
    "torch.nn.attention._fa4", "torch.ao.nn", "torch.nn.quantizable", "torch.nn.quantized",
    "torch._decomp", "torch._refs", "torch._higher_order_ops.flex_attention", "torch.onnx.ops",
    "torchvision.models", "torchvision.ops",
)
# Packages whose nn.Module classes named like a forbidden thing are forbidden.
_CLASS_PACKAGES = ("torch", "torchvision", "functorch")

_KERNEL_LINE = re.compile(r"^(\w+)(?:\[alias\])?: registered at .* :: ", re.M)
_ALWAYS_KEYS = ("CompositeImplicitAutograd", "CompositeExplicitAutograd", "Autograd")
_BLOCK_FAILURES: list[str] = []  # (for tests) registrations the dispatcher refused


def _in_packages(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _dispatch_keys(qualified: str) -> list[str]:
    """The dispatch keys at which the operator overload has a kernel (as the registry lists
    them, alias keys included), plus the alias keys that cover every backend and autograd."""
    keys = list(_ALWAYS_KEYS)
    try:
        keys += _KERNEL_LINE.findall(torch._C._dispatch_dump(qualified))
    except Exception:
        pass
    for name, key in torch._C.DispatchKey.__members__.items():
        if name.startswith(("StartOf", "EndOf")) or name == "Undefined":
            continue
        try:
            if torch._C._dispatch_has_kernel_for_dispatch_key(qualified, key):
                keys.append(name)
        except Exception:
            pass
    # Meta kernels compute shapes, never values; torch.library refuses one beside the
    # CompositeImplicitAutograd kernel registered here.
    return [k for k in dict.fromkeys(keys) if k != "Meta"]


def _operator_registrations(ops):
    """(namespace, overload name, label, dispatch keys) for every overload of every op."""
    wanted = set(ops)
    registrations = []
    for qualified in sorted(torch._C._dispatch_get_all_op_names()):
        base = qualified.split(".")[0]
        if base in wanted:
            namespace, name = qualified.split("::", 1)
            registrations.append((namespace, name, f"torch.ops.{base.replace('::', '.')}", _dispatch_keys(qualified)))
    return registrations


def _op_objects(ops):
    """(OpOverload, label) of every overload of the forbidden operators."""
    found = []
    for qualified in ops:
        namespace, name = qualified.split("::", 1)
        try:
            packet = getattr(getattr(torch.ops, namespace), name)
            label = f"torch.ops.{namespace}.{name}"
            found += [(getattr(packet, o), label) for o in packet.overloads()]
        except Exception:
            pass
    return found


def _operator_python_code(ops):
    """(function, label) of the Python implementations torch keeps for the forbidden operators
    (py_kernels, decompositions, custom-op functions: each computes the operator with plain
    torch code, reachable without the dispatcher), and (class, label) of the higher-order
    operators with forbidden names (flex_attention)."""
    functions, classes = [], []
    try:
        from torch._decomp import global_decomposition_table
        tables = [t for kind, t in global_decomposition_table.items() if kind != "meta"]
    except Exception:
        tables = []
    for op, label in _op_objects(ops):
        # Meta kernels compute shapes, never values (and may serve other operators too).
        kernels = [fn for key, fn in getattr(op, "py_kernels", {}).items() if key != torch._C.DispatchKey.Meta]
        kernels += list(getattr(op, "python_key_table", {}).values())
        functions += [(fn, label) for fn in kernels
                      if getattr(fn, "__module__", None) != "torch._meta_registrations"]
        functions += [(table[op], label) for table in tables if op in table]
    try:
        from torch._library.custom_ops import OPDEFS
        for qualified in ops:
            opdef = OPDEFS.get(qualified)
            if opdef is not None:
                label = f"torch.ops.{qualified.replace('::', '.')}"
                functions += [(fn, label) for fn in [getattr(opdef, "_init_fn", None),
                                                     *getattr(opdef, "_backend_fns", {}).values()]]
    except Exception:
        pass
    try:
        from torch._ops import _higher_order_ops
        for name, hop in list(_higher_order_ops.items()):
            if forbidden_name(name):
                label = f"torch.ops.higher_order.{name}"
                classes.append((type(hop), label))
                for table in (hop.py_kernels, getattr(hop, "python_key_table", {}),
                              getattr(hop, "functorch_table", {})):
                    functions += [(fn, label) for fn in list(table.values())]
    except Exception:
        pass
    return functions, classes


# Called on the class itself, never on an instance: left alone, so that isinstance checks and
# a later import that subclasses a forbidden class (torch's own modules) cost nothing.
_CLASS_HOOKS = frozenset({"__init_subclass__", "__class_getitem__", "__instancecheck__",
                          "__subclasscheck__", "__subclasshook__", "__set_name__"})


def _disable_class(cls, raiser) -> None:
    """Every function defined in the class (methods, static and class methods, properties)
    raises; __init__ and forward raise even when inherited."""
    for name, value in list(vars(cls).items()):
        if name in _CLASS_HOOKS:
            continue
        for fn in _functions_of(value):
            _disable_function(fn, raiser)
    for attribute in ("__init__", "forward"):
        if attribute not in vars(cls):
            try:
                setattr(cls, attribute, raiser)
            except (TypeError, AttributeError):
                pass


def _forbidden_module_class(cls) -> str:
    """The public name of the first library class in cls's MRO that is a forbidden nn.Module
    (its name has a forbidden word), or ""."""
    for base in getattr(cls, "__mro__", ()):
        module = getattr(base, "__module__", "") or ""
        if _in_packages(module, _CLASS_PACKAGES) and forbidden_name(base.__name__) \
                and not _in_packages(module, ALLOWED_PATHS) and base is not torch.nn.Module:
            return _public_name(base)
    return ""


def _module_items(module_name: str, module):
    """(function, label) and (class, label) of what one module defines under a forbidden
    name: nn.Module classes (in _CLASS_PACKAGES), implementations and custom ops (in
    _FUNCTION_PACKAGES)."""
    functions, classes = [], []
    for_classes = _in_packages(module_name, _CLASS_PACKAGES)
    for_functions = _in_packages(module_name, _FUNCTION_PACKAGES)
    if not (for_classes or for_functions) or _in_packages(module_name, ALLOWED_PATHS):
        return functions, classes
    try:
        items = list(vars(module).items())
    except TypeError:
        return functions, classes
    for name, value in items:
        if not forbidden_name(name):
            continue
        if for_classes and isinstance(value, type) and issubclass(value, torch.nn.Module) \
                and _forbidden_module_class(value):
            classes.append((value, _public_name(value)))
        elif for_functions and isinstance(value, types.FunctionType):
            functions.append((value, f"{module_name}.{name}"))
        elif for_functions and hasattr(value, "_init_fn"):  # a torch.library custom op
            functions.append((getattr(value, "_init_fn"), f"{module_name}.{name}"))
    return functions, classes


def _module_code():
    """_module_items of every loaded module."""
    functions, classes = [], []
    for module_name, module in sorted(sys.modules.items(), key=lambda kv: kv[0]):
        if module is not None:
            more_functions, more_classes = _module_items(module_name, module)
            functions += more_functions
            classes += more_classes
    return functions, classes


class _SweepingLoader:
    """Runs a module's loader, then disables what the new module defines under a forbidden name."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        outermost = getattr(_LOADING, "depth", 0) == 0
        registered_before = set(torch._C._dispatch_get_all_op_names()) if outermost else set()
        _LOADING.depth = getattr(_LOADING, "depth", 0) + 1
        try:
            self._loader.exec_module(module)
        finally:
            _LOADING.depth -= 1
            if outermost:  # once, for the operators this module and what it imported registered
                _block_operators(_forbidden_among(set(torch._C._dispatch_get_all_op_names()) - registered_before))
        functions, classes = _module_items(module.__name__, module)
        for fn, label in functions:
            _disable_function(fn, _forbidden_raiser(label))
        for cls, label in classes:
            _disable_class(cls, _forbidden_raiser(label))


# How many library modules each thread is importing after the block (per thread: an import
# on another thread that outlasts this one's is still its own outermost).
_LOADING = threading.local()


class _SweepingFinder:
    """On sys.meta_path after block_for_good: modules of the swept packages imported later
    (torchvision, say) are swept as they load."""

    def find_spec(self, name, path=None, target=None):
        if not (_in_packages(name, _CLASS_PACKAGES) or _in_packages(name, _FUNCTION_PACKAGES)):
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _SweepingLoader(spec.loader)
                return spec
        return None


def _builtin_names(ops):
    """(owner, label, name) of the Python names of the forbidden aten operators: torch.lstm_cell,
    torch._VF.lstm, F.scaled_dot_product_attention..."""
    owners = [("torch", torch), ("torch._VF", torch._VF), ("torch._C._VariableFunctions", torch._C._VariableFunctions),
              ("torch._C._nn", torch._C._nn), ("torch.nn.functional", torch.nn.functional)]
    names = sorted({q.split("::", 1)[1] for q in ops if q.startswith("aten::")})
    found = []
    for label, owner in owners:
        for name in names:
            try:
                present = getattr(owner, name, None) is not None
            except Exception:
                present = False
            if present:
                found.append((owner, label, name))
    return found


_PLAN: dict = {}


def prepare() -> None:
    """Work out what block_for_good blocks (import the packages that define forbidden things,
    read the registries, sweep the modules): about a second, done once. Call it before forking
    the processes that will call block_for_good, so that each of them only applies it."""
    if _PLAN:
        return
    _PLAN.update(_operator_plan(forbidden_aten_ops()))
    functions, classes = _module_code()
    _PLAN["functions"] += functions
    _PLAN["classes"] += classes


def _operator_plan(ops) -> dict:
    """What blocking the operators ops ("ns::name") takes: their registrations, their Python
    code and classes, and their Python names."""
    functions, classes = _operator_python_code(ops)
    return dict(ops=tuple(ops), registrations=_operator_registrations(ops), functions=functions,
                classes=classes, names=_builtin_names(ops))


def _block_operators(ops) -> None:
    """After block_for_good, blocks operators that a library module registered as it loaded
    (torch.nn.attention.varlen's torch_attn::_varlen_attn) as block_for_good blocked the
    planned ones. An operator of the student's own, registered by a cell, is never here: only
    what was registered while a module of torch, torchvision or functorch was importing."""
    if ops:
        _apply(_operator_plan(ops))


def _apply(plan: dict) -> None:
    """Raising kernels, disabled code and replaced names for what plan lists; None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
        _register_raising_kernels(plan["registrations"])
    for fn, label in plan["functions"]:
        _disable_function(fn, _forbidden_raiser(label))
    for cls, label in plan["classes"]:
        _disable_class(cls, _forbidden_raiser(label))
    _replace_operator_names(plan["names"])


def _hook_module_init() -> None:
    """nn.Module.__init__ refuses forbidden classes, also those of modules imported later."""
    original_init = torch.nn.Module.__init__
    verdicts: dict = {}

    def __init__(self, *args, **kwargs):
        cls = type(self)
        if cls not in verdicts:
            verdicts[cls] = _forbidden_module_class(cls)
        if verdicts[cls]:
            _forbidden_raiser(verdicts[cls])()
        original_init(self, *args, **kwargs)
    __init__.__doc__ = original_init.__doc__
    _FOREVER.append(original_init)
    torch.nn.Module.__init__ = __init__


_BLOCKED = {"done": False}


def block_for_good(report_fd: int | None = None) -> None:
    """Make every forbidden built-in raise ForbiddenModuleError, and record each attempt, for
    the rest of this process's life (call it in the forked process that runs one unit, before
    any student code; nothing undoes it):

    * raising kernels at the dispatcher for every overload of every forbidden_aten_ops()
      operator, at every dispatch key it has a kernel for and at CompositeImplicitAutograd,
      CompositeExplicitAutograd and Autograd (so inference mode, vmap, or skipping autograd
      still reach one);
    * forbidden nn.Module classes (torch.nn, torch.ao.nn, torchvision) and the pure-Python
      implementations (F.multi_head_attention_forward, decompositions, flex_attention...)
      disabled in place: their code is replaced, so every reference to them raises;
      nn.Module.__init__ refuses forbidden classes of modules imported later;
    * the Python names of the operators (torch.lstm_cell, torch._VF.lstm,
      F.scaled_dot_product_attention) replaced by raisers named after them.

    report_fd: a file descriptor to which each attempt is also written at once, one line
    each, so that a parent holding its other end learns of it whatever the process does next.
    """
    if report_fd is not None:
        _REPORT["fd"] = report_fd
    if _BLOCKED["done"]:
        return
    _BLOCKED["done"] = True
    prepare()
    _apply(_PLAN)
    _hook_module_init()
    sys.meta_path.insert(0, _SweepingFinder())


def _register_raising_kernels(registrations) -> None:
    """Registers a raiser for every (namespace, overload, label, keys) at each key; None."""
    libraries: dict[str, torch.library.Library] = {}
    for namespace, name, label, keys in registrations:
        if namespace not in libraries:
            libraries[namespace] = torch.library.Library(namespace, "IMPL")
            _FOREVER.append(libraries[namespace])  # a Library removes its kernels when collected
        _impl_everywhere(libraries[namespace], f"{namespace}::{name}", _forbidden_raiser(label), keys)


def _impl_everywhere(library: torch.library.Library, qualified: str, raiser, keys) -> None:
    """Registers raiser as the kernel of `qualified` ("aten::lstm.input") at each key; None.
    A key that cannot be registered is kept in _BLOCK_FAILURES rather than stopping the rest."""
    for key in keys:
        try:
            library.impl(qualified.split("::", 1)[1], raiser, key)
        except Exception as exc:
            _BLOCK_FAILURES.append(f"{qualified} at {key}: {exc}"[:300])


def _replace_operator_names(names) -> None:
    """Disables (or, when not Python functions, replaces) the Python names (owner, label, name)
    of the operators; None."""
    for owner, label, name in names:
        current = getattr(owner, name, None)
        if not _disable_function(current, _forbidden_raiser(f"{label}.{name}")):
            try:
                setattr(owner, name, _forbidden_raiser(f"{label}.{name}"))
            except (TypeError, AttributeError):
                pass


# ---------------------------------------------------------------------------------------
# refuse_autograd
# ---------------------------------------------------------------------------------------

# (module, attribute) of the Python functions through which autograd computes a gradient.
_AUTOGRAD_FUNCTIONS = (
    ("torch._tensor", "Tensor.backward"),
    ("torch.autograd", "backward"), ("torch.autograd", "grad"),
    ("torch.autograd.graph", "_engine_run_backward"),
    *[("torch.autograd.functional", n) for n in ("vjp", "jvp", "jacobian", "hessian", "hvp", "vhp")],
    *[("torch.autograd.forward_ad", n) for n in ("make_dual", "unpack_dual", "enter_dual_level")],
    *[("torch._functorch.eager_transforms", n) for n in (
        "grad_impl", "grad_and_value_impl", "vjp", "jvp", "jacrev", "jacfwd", "hessian",
        "linearize", "_vjp_with_argnums", "_jvp_with_argnums", "_autograd_grad")],
    *[("torch._functorch.apis", n) for n in ("grad", "grad_and_value")],
    *[("functorch", n) for n in ("grad", "grad_and_value", "vjp", "jvp", "jacrev", "jacfwd", "hessian")],
)
# Forward-mode AD needs no engine: its operators are refused at the dispatcher.
_AUTOGRAD_OPS = ("aten::_make_dual",)


class _RefusedEngine:
    def __init__(self, raiser):
        self._raiser = raiser

    def __getattr__(self, name):
        return self._raiser


def refuse_autograd(unit: str = "this unit", report_fd: int | None = None) -> None:
    """In the process of a hand-written backward unit, before any student code: autograd
    cannot compute a gradient (Tensor.backward, torch.autograd.grad/backward/functional,
    forward-mode AD, torch.func transforms, the engine itself), grad mode is off and cannot be
    turned on. Each attempt raises ForbiddenModuleError ("<unit> must be written by hand:
    autograd is not available here") and is recorded in violations(). Never undone."""
    if report_fd is not None:
        _REPORT["fd"] = report_fd
    _import_extras()
    for public, target in _autograd_functions():
        _disable_function(target, _autograd_raiser(public, unit))
    _refuse_engine(unit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        library = torch.library.Library("aten", "IMPL")
        _FOREVER.append(library)
        for qualified in _AUTOGRAD_OPS:
            _impl_everywhere(library, qualified, _autograd_raiser("forward-mode autograd", unit),
                             _dispatch_keys(qualified))
    _keep_grad_mode_off(unit)


def _autograd_functions():
    """Yields (public name, function) for each of _AUTOGRAD_FUNCTIONS present, one at a time:
    functorch is imported only when its turn comes, after torch's functions are disabled."""
    for module_name, attribute in _AUTOGRAD_FUNCTIONS:
        module = sys.modules.get(module_name)
        if module is None and module_name == "functorch":
            try:
                module = importlib.import_module("functorch")
            except Exception:
                module = None
        target = module
        for part in attribute.split(".") if module is not None else ():
            target = getattr(target, part, None)
        if target is not None:
            public = f"{module_name}.{attribute}"
            if attribute == "Tensor.backward":
                public = "torch.Tensor.backward"
            elif module_name.startswith("torch._functorch") and getattr(torch.func, attribute, None) is target:
                public = f"torch.func.{attribute}"
            yield public, target


def _refuse_engine(unit: str) -> None:
    """Replaces the autograd engine (Variable's, and the classes that make one) by raisers; None."""
    engine_raiser = _autograd_raiser("the autograd engine", unit)
    variable = sys.modules["torch.autograd.variable"].Variable
    variable._execution_engine = _RefusedEngine(engine_raiser)
    for owner, name in ((torch._C, "_ImperativeEngine"), (torch._C, "_EngineBase"),
                        (sys.modules["torch.autograd.variable"], "ImperativeEngine")):
        try:
            setattr(owner, name, _autograd_raiser(f"torch._C.{name}", unit))
        except (TypeError, AttributeError):
            pass


def _keep_grad_mode_off(unit: str) -> None:
    """Turns grad mode off for good: turning it back on raises; None."""
    # No graph is recorded from here on (so no grad_fn to call by hand), and grad mode cannot
    # be turned back on: torch.enable_grad and set_grad_enabled(True) end in _set_grad_enabled.
    set_grad_enabled = torch._C._set_grad_enabled
    set_grad_enabled(False)
    grad_mode_raiser = _autograd_raiser("torch.enable_grad", unit)

    def _set_grad_enabled(mode):
        if mode:
            grad_mode_raiser()
        return set_grad_enabled(False)
    torch._C._set_grad_enabled = _set_grad_enabled
    _FOREVER.append(set_grad_enabled)


# ---------------------------------------------------------------------------------------
# refuse_threads
# ---------------------------------------------------------------------------------------

# Every Python thread is born in one of these (threading.Thread, concurrent.futures'
# executors, multiprocessing's thread pools, asyncio.to_thread, logging's QueueListener...
# all end there); threading keeps its own references to them.
_THREAD_STARTERS = (("_thread", ("start_new_thread", "start_new", "start_joinable_thread")),
                    ("threading", ("_start_new_thread", "_start_joinable_thread")))


def refuse_threads(unit: str = "this unit", cells=THREADLESS_CELLS, report_fd: int | None = None) -> None:
    """In the process of a unit whose code runs in a hand-written backward pass's, before any
    student code: starting a thread, by any Python route, raises ForbiddenModuleError
    (threads_refused of the cell whose code started it: the innermost of cells on the stack,
    else unit) and is recorded in violations(). Never undone. os.fork and signal handlers
    stay: a forked child and a handler run with the caller's grad mode, off."""
    if report_fd is not None:
        _REPORT["fd"] = report_fd
    files = {f"<{cell}>": cell for cell in cells}  # worker.py compiles each cell as <name>

    def refused(*args, **kwargs):
        frame, cell = _getframe(1), unit
        while frame is not None:
            if frame.f_code.co_filename in files:
                cell = files[frame.f_code.co_filename]
                break
            frame = frame.f_back
        _record(threads_refused(cell))
        raise ForbiddenModuleError(threads_refused(cell))
    refused.__name__ = refused.__qualname__ = "refused"
    for module_name, names in _THREAD_STARTERS:
        module = importlib.import_module(module_name)
        for name in names:
            if hasattr(module, name):
                setattr(module, name, refused)


# ---------------------------------------------------------------------------------------
# The static check
# ---------------------------------------------------------------------------------------

_LIBRARY_ROOTS = ("torch", "torchvision", "functorch")
# Modules and builtins whose only use in graded code is to get around the checks: to reach
# objects by other routes than names (gc, inspect, frames), to run code the check cannot read
# (exec, compile, importlib), to undo the runtime block (ctypes, reloading a module), to run
# code outside it (a new interpreter), or to reach the grader's own modules.
_DISMANTLING_MODULES = {
    "gc": "it reaches objects behind the grader's back",
    "ctypes": "it can rewrite the interpreter's memory",
    "importlib": "it loads or reloads modules behind the grader's back",
    "imp": "it loads or reloads modules behind the grader's back",
    # importlib's own machinery, and what reaches its loaders: each can make a fresh copy of
    # a module the grader changed (_thread's thread starters, say).
    "_imp": "it loads or reloads modules behind the grader's back",
    "_frozen_importlib": "it loads or reloads modules behind the grader's back",
    "_frozen_importlib_external": "it loads or reloads modules behind the grader's back",
    "pkgutil": "it loads or reloads modules behind the grader's back",
    "zipimport": "it loads or reloads modules behind the grader's back",
    "runpy": "it runs code the grader cannot read",
    "code": "it runs code the grader cannot read",
    "codeop": "it compiles code the grader cannot read",
    "marshal": "it builds code the grader cannot read",
    "inspect": "it reaches frames and objects behind the grader's back",
    "builtins": "it changes Python's built-ins",
    "subprocess": "it runs code outside the grader's process",
    "multiprocessing": "it runs code outside the grader's process",
    "pty": "it runs code outside the grader's process",
    "forbidden": "it is part of the grader", "worker": "it is part of the grader",
    "graded_tests": "it is part of the grader", "served": "it is part of the grader",
    "wire": "it is part of the grader", "autograder": "it is part of the grader",
    "solution": "it is the grader's reference",
}
_DISMANTLING_ATTRIBUTES = {
    "sys": {"modules", "_getframe", "settrace", "setprofile", "meta_path", "path_hooks",
            "path_importer_cache", "addaudithook", "_current_frames"},
    "os": {"system", "popen", "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp",
           "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp",
           "spawnvpe", "posix_spawn", "posix_spawnp"},
}
_DISMANTLING_BUILTINS = {
    "__import__": "it imports modules behind the grader's back",
    "eval": "it runs code the grader cannot read", "exec": "it runs code the grader cannot read",
    "compile": "it compiles code the grader cannot read",
    "breakpoint": "it stops the grader",
    "__builtins__": "it changes Python's built-ins",
}
# Attributes that reach into functions, frames and modules rather than use them.
_INTROSPECTION_ATTRIBUTES = frozenset({
    "__globals__", "__closure__", "__code__", "__builtins__", "__subclasses__", "__kwdefaults__",
    "__defaults__", "__wrapped__", "__self__", "__func__", "__loader__", "__spec__", "__import__",
    "f_globals", "f_locals", "f_back", "f_builtins", "f_code", "tb_frame", "gi_frame", "cr_frame",
    "ag_frame", "gi_code", "co_consts",
})
# Public torch namespaces that only serve to reach kernels, registries and transforms behind the
# nn and functional names the assignment is about.
_TORCH_BACKDOORS = {
    "torch.ops": "it calls torch's kernels directly",
    "torch.library": "it changes torch's kernels",
    "torch.ao": "it holds further recurrent and attention modules",
    "torch.func": "it holds autograd transforms",
    "functorch": "it holds autograd transforms",
}
# In the hand-written backward units.
_AUTOGRAD_PATHS = ("torch.autograd", "torch.enable_grad", "torch.set_grad_enabled", "torch.func",
                   "functorch", "torch.Tensor.backward")
_AUTOGRAD_ATTRIBUTES = frozenset({"backward", "requires_grad", "requires_grad_", "grad_fn", "grad",
                                  "retain_grad", "register_hook", "next_functions"})
# In THREADLESS_CELLS: a new thread starts with grad mode on (refuse_threads at run time).
_THREAD_MODULES = ("threading", "_thread", "concurrent")

_MAX_PARTS = 40  # attribute chains longer than this are not resolved


def _clean(text: str, limit: int = 120) -> str:
    """Student-controlled text made safe to show: no lone surrogates, no control characters."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Cell:
    """One parsed cell: its tree, parent links, and the names it binds."""

    def __init__(self, name: str, source: str):
        self.name = name
        self.error = None
        self.tree = None
        try:
            self.tree = ast.parse(source)
        except SyntaxError as exc:
            where = f"line {exc.lineno}: " if exc.lineno else ""
            self.error = f"your cell cannot be parsed ({where}{_clean(str(exc.msg))})"
        except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
            self.error = f"your cell cannot be parsed ({type(exc).__name__})"
        self.nodes = list(ast.walk(self.tree)) if self.tree is not None else []
        self.parent = {}
        for node in self.nodes:
            for child in ast.iter_child_nodes(node):
                self.parent[child] = node


def _bound_names(node) -> list[str]:
    """Names a target binds (a, (a, b), [a, *b]); attributes and subscripts bind none."""
    names, stack = [], [node]
    while stack:
        target = stack.pop()
        if isinstance(target, ast.Name):
            names.append(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            stack.extend(target.elts)
        elif isinstance(target, ast.Starred):
            stack.append(target.value)
    return names


class _Resolver:
    """Resolves expressions to dotted paths of modules ("torch.nn.LSTM") through imports and
    assignments of a whole notebook."""

    def __init__(self, aliases: dict[str, str], stars: list[str], known: set[str]):
        self.aliases = aliases  # name -> dotted path
        self.stars = stars  # modules imported with *
        self.known = known  # names the cell (or the preamble) binds: a star import does not explain them

    def path(self, node) -> str | None:
        parts = []
        while len(parts) <= _MAX_PARTS:
            if isinstance(node, ast.Attribute):
                parts.append(node.attr)
                node = node.value
            elif _is_constant_getattr(node):
                parts.append(node.args[1].value)
                node = node.args[0]
            elif _is_dict_lookup(node):
                parts.append(node.slice.value)
                node = node.value.value if isinstance(node.value, ast.Attribute) else node.value.args[0]
            elif isinstance(node, ast.Name):
                base = self.aliases.get(node.id)
                if base is None and node.id not in self.known and not hasattr(builtins, node.id):
                    for star in self.stars:
                        if forbidden_name(node.id):
                            base = f"{star}.{node.id}"
                            break
                if base is None:
                    return None
                return ".".join([base, *reversed(parts)])
            else:
                return None
        return None


def _is_constant_getattr(node) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
            and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str))


def _is_dict_lookup(node) -> bool:
    """X.__dict__["name"] or vars(X)["name"]."""
    if not (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)):
        return False
    value = node.value
    if isinstance(value, ast.Attribute) and value.attr == "__dict__":
        return True
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "vars"
            and len(value.args) == 1)


def _judge_path(path: str) -> str | None:
    """Why a use of this dotted path is not allowed, or None."""
    parts = path.split(".")
    root = parts[0]
    if root in _DISMANTLING_MODULES:
        return f"{root} is not allowed in graded code: {_DISMANTLING_MODULES[root]}"
    if root in _DISMANTLING_ATTRIBUTES and len(parts) > 1 and parts[1] in _DISMANTLING_ATTRIBUTES[root]:
        return f"{root}.{parts[1]} is not allowed in graded code: it serves only to get around the grader"
    if root not in _LIBRARY_ROOTS:
        return None
    for prefix, why in _TORCH_BACKDOORS.items():
        if path == prefix or path.startswith(prefix + "."):
            return f"{prefix} is not allowed in this assignment: {why}"
    if any(path == p or path.startswith(p + ".") for p in ALLOWED_PATHS):
        return None
    for i, part in enumerate(parts[1:], start=1):
        shown = ".".join(parts[: i + 1])
        if forbidden_name(part):
            return f"{_clean(shown)} is not allowed in this assignment (write your own)"
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            return (f"{_clean(shown)} is not allowed in graded code: it is a private part of torch, "
                    "which serves only to get around the assignment's rules")
    return None


def _judge_autograd_path(path: str) -> str | None:
    for prefix in _AUTOGRAD_PATHS:
        if path == prefix or path.startswith(prefix + "."):
            return prefix
    return None


def _thread_uses(cell: _Cell, uses: list[tuple[ast.AST, str]]) -> list[tuple[ast.AST, str]]:
    """(node, text) of each use of a thread module in a cell of THREADLESS_CELLS: the cell's
    own finding, whichever unit's process its code would run in."""
    return [(node, threads_refused(cell.name, root)) for node, path in uses
            if (root := path.split(".")[0]) in _THREAD_MODULES]


def _import_aliases(node) -> tuple[list[tuple[str, str]], list[str]]:
    """([(name, dotted path it stands for)], [star-imported modules]) of an import; ([], []) for
    any other node."""
    if isinstance(node, ast.Import):
        bound = [alias.asname or alias.name.split(".")[0] for alias in node.names]
        return [(name, alias.name if alias.asname else name) for name, alias in zip(bound, node.names)], []
    if isinstance(node, ast.ImportFrom):
        module = ("." * node.level) + (node.module or "")
        return ([(alias.asname or alias.name, f"{module}.{alias.name}") for alias in node.names if alias.name != "*"],
                [module for alias in node.names if alias.name == "*"])
    return [], []


def _assigned_values(node) -> list[tuple[list[str], ast.AST]]:
    """[(names bound, the expression bound to them)] of an assignment (a, b = x, y gives one pair
    each); [] for any other node."""
    if isinstance(node, ast.Assign):
        pairs = []
        for target in node.targets:
            if isinstance(target, (ast.Tuple, ast.List)) and isinstance(node.value, (ast.Tuple, ast.List)) \
                    and len(target.elts) == len(node.value.elts):
                pairs += [(_bound_names(t), v) for t, v in zip(target.elts, node.value.elts)]
            else:
                pairs.append((_bound_names(target), node.value))
        return pairs
    if isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) and node.value is not None:
        return [(_bound_names(node.target), node.value)]
    return []


def _other_bound_names(node) -> list[str]:
    """Names a def, class, argument, loop or comprehension target, with-as or except-as binds; []
    for any other node (imports and assignments are read apart)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.arg):
        return [node.arg]
    if isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
        return _bound_names(node.target)
    if isinstance(node, ast.withitem) and node.optional_vars is not None:
        return _bound_names(node.optional_vars)
    if isinstance(node, ast.ExceptHandler) and node.name:
        return [node.name]
    return []


def _collect_bindings(cells: list[_Cell], preamble: _Cell):
    """The names of a whole notebook: (aliases bound anywhere, {cell: aliases it binds
    itself}, star-imported modules, {cell: every name it binds}, {cell: names it binds to something that
    is not a dotted path}). An alias maps a name to the dotted path it stands for."""
    aliases: dict[str, str] = {}
    own: dict[str, dict[str, str]] = {}
    stars: list[str] = []
    known: dict[str, set[str]] = {}
    shadowed: dict[str, set[str]] = {}
    assignments = []  # resolved after imports: (cell name, bound names, value)
    for cell in [preamble, *cells]:
        mine = own.setdefault(cell.name, {})
        hidden = shadowed.setdefault(cell.name, set())
        bound_here = known.setdefault(cell.name, set())
        for node in cell.nodes:
            imported, star_modules = _import_aliases(node)
            for bound, path in imported:
                aliases[bound] = mine[bound] = path
                bound_here.add(bound)
            stars += star_modules
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                hidden.add(node.name)
            bound_here.update(_other_bound_names(node))
            assignments += [(cell.name, bound, value) for bound, value in _assigned_values(node)]
    resolver = _Resolver(aliases, stars, set().union(*known.values()))
    _resolve_assignments(assignments, resolver, own, known, shadowed)
    return aliases, own, stars, known, shadowed


def _resolve_assignments(assignments, resolver: _Resolver, own, known, shadowed) -> None:
    """Adds assignment aliases (L = nn.LSTM; a, b = torch.nn, F) to resolver.aliases and own, and
    the names assigned to known and, when not a dotted path, to shadowed; None."""
    # Resolved until nothing changes (an alias of an alias, possibly made in another cell).
    for _ in range(5):
        changed = False
        for cell_name, bound, value in assignments:
            path = resolver.path(value)
            for name in bound:
                known[cell_name].add(name)
                if path is None:
                    shadowed[cell_name].add(name)
                elif own[cell_name].get(name) != path:
                    resolver.aliases[name] = own[cell_name][name] = path
                    changed = True
        if not changed:
            break


def _resolved_paths(cell: _Cell, resolver: _Resolver) -> dict[ast.AST, str]:
    """{node: dotted path} of every name load, attribute, constant getattr and __dict__ lookup
    in the cell that resolves to one."""
    def may_resolve(node) -> bool:
        if isinstance(node, ast.Name):
            return isinstance(node.ctx, ast.Load)
        if isinstance(node, ast.Call):
            return _is_constant_getattr(node)
        if isinstance(node, ast.Subscript):
            return _is_dict_lookup(node)
        return isinstance(node, ast.Attribute)
    return {node: path for node in cell.nodes if may_resolve(node) and (path := resolver.path(node)) is not None}


def _imported_paths(cell: _Cell) -> list[tuple[ast.AST, str]]:
    """(import node, dotted path) of each module and name the cell imports (relative imports
    left out: they cannot reach torch)."""
    found = []
    for node in cell.nodes:
        if isinstance(node, ast.Import):
            found += [(node, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            module = node.module or ""
            found += [(node, module if alias.name == "*" else f"{module}.{alias.name}") for alias in node.names]
    return found


def _attribute_call_finding(node, resolver: _Resolver) -> str | None:
    """Why a getattr, setattr or delattr call on torch is not allowed (it changes torch, or its
    name is computed), or None."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args
            and node.func.id in ("getattr", "setattr", "delattr") and node.func.id not in resolver.known):
        return None
    target = resolver.path(node.args[0])
    if target is None or target.split(".")[0] not in _LIBRARY_ROOTS:
        return None
    if node.func.id != "getattr":
        return f"{node.func.id} on {_clean(target)} is not allowed in graded code: it changes torch itself"
    if not _is_constant_getattr(node):
        return (f"getattr on {_clean(target)} with a computed name is not allowed in graded code: "
                "the grader cannot tell what it reaches")
    return None


def _dismantling_uses(cell: _Cell, resolver: _Resolver) -> list[tuple[ast.AST, str]]:
    """(node, text) of each dismantling built-in, introspection attribute, and getattr, setattr
    or delattr on torch in the cell."""
    found = []
    for node in cell.nodes:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id in _DISMANTLING_BUILTINS and node.id not in resolver.known:
                found.append((node, f"{node.id} is not allowed in graded code: {_DISMANTLING_BUILTINS[node.id]}"))
        elif isinstance(node, ast.Attribute) and node.attr in _INTROSPECTION_ATTRIBUTES:
            found.append((node, f"{node.attr} is not allowed in graded code: it reaches into functions, frames "
                                "or modules behind the grader's back"))
        elif why := _attribute_call_finding(node, resolver):
            found.append((node, why))
    return found


_WITHOUT_AUTOGRAD = "is not allowed here: the backward pass must be written by hand, without autograd"


def _autograd_uses(cell: _Cell, uses: list[tuple[ast.AST, str]], paths: dict) -> list[tuple[ast.AST, str]]:
    """(node, text) of each use of autograd: a use of a path under it, or one of its attributes
    on anything the resolver cannot name (which paths then holds no path for)."""
    found = [(node, f"{_judge_autograd_path(path)} {_WITHOUT_AUTOGRAD}")
             for node, path in uses if _judge_autograd_path(path)]
    found += [(node, f".{node.attr} {_WITHOUT_AUTOGRAD}") for node in cell.nodes
              if isinstance(node, ast.Attribute) and node.attr in _AUTOGRAD_ATTRIBUTES and node not in paths]
    return found


def _cell_findings(cell: _Cell, resolver: _Resolver,
                   autograd: bool) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(findings of forbidden and dismantling uses, findings of autograd uses) as (line, text)."""
    paths = _resolved_paths(cell, resolver)
    # Only the longest chain is judged: torch.nn.LSTM, not also torch.nn.
    longest = [(node, path) for node, path in paths.items() if cell.parent.get(node) not in paths]
    changes = {node for node, _ in longest if isinstance(node, ast.Attribute)
               and isinstance(node.ctx, (ast.Store, ast.Del))}
    uses = [(node, path) for node, path in longest if node not in changes] + _imported_paths(cell)
    found = [(node, f"changing {_clean(path)} is not allowed in graded code: it changes torch itself")
             for node, path in longest if node in changes
             and path.split(".")[0] in _LIBRARY_ROOTS and not path.startswith("torch.backends.")]
    found += [(node, why) for node, path in uses if (why := _judge_path(path))]
    found += _dismantling_uses(cell, resolver)
    found += _thread_uses(cell, uses) if cell.name in THREADLESS_CELLS else []
    autograd_found = _autograd_uses(cell, uses, paths) if autograd else []
    return ([(getattr(node, "lineno", 0) or 0, text) for node, text in found],
            [(getattr(node, "lineno", 0) or 0, text) for node, text in autograd_found])


def _format(findings: list[tuple[int, str]], prefix: str = "") -> list[str]:
    return [f"{prefix}line {line}: {text}" for line, text in sorted(set(findings))]


def find_forbidden_in_cells(cells: dict[str, str], preamble_imports: str = "") -> dict[str, list[str]]:
    """{unit: findings} for every cell (an empty list when the cell is clean).

    Names are resolved through the imports of the preamble (the code every unit runs with)
    and of every cell, and through assignment aliases anywhere in the notebook (L = nn.LSTM);
    a cell's own definitions (class LSTM) shadow another cell's aliases. A cell that cannot be
    parsed gets one finding saying so. Mentions in strings, docstrings and comments are not
    uses. For the units in HAND_WRITTEN_BACKWARD, uses of autograd in the cells whose code
    runs in their process are findings too; a thread module in one of those cells
    (THREADLESS_CELLS) is a finding of that cell alone.
    """
    preamble = _Cell("<preamble>", preamble_imports or "")
    parsed = {name: _Cell(name, source if isinstance(source, str) else "") for name, source in cells.items()}
    aliases, own, stars, known, shadowed = _collect_bindings(
        [c for c in parsed.values() if c.tree is not None], preamble)
    results: dict[str, list[str]] = {}
    autograd_by_cell: dict[str, list[tuple[int, str]]] = {}
    for name, cell in parsed.items():
        if cell.error:
            results[name] = [cell.error]
            continue
        # Another cell's alias counts unless this cell binds the name to something else; the
        # cell's own aliases count in any case (conservative: L = nn.LSTM is a use anyway).
        cell_aliases = {k: v for k, v in aliases.items() if k not in shadowed.get(name, ())}
        cell_aliases.update(own.get(name, {}))
        resolver = _Resolver(cell_aliases, stars, known.get(name, set()) | known.get("<preamble>", set()))
        needs_autograd_check = any(name in cells_ for cells_ in HAND_WRITTEN_BACKWARD.values())
        found, autograd_found = _cell_findings(cell, resolver, needs_autograd_check)
        results[name] = _format(found)
        autograd_by_cell[name] = autograd_found
    for unit, unit_cells in HAND_WRITTEN_BACKWARD.items():
        if unit not in results or parsed[unit].error:
            continue
        for cell_name in unit_cells:
            prefix = "" if cell_name == unit else f"in your {cell_name} cell, "
            results[unit] += _format(autograd_by_cell.get(cell_name, []), prefix)
    return results


def find_forbidden(source: str, filename: str = "<source>", preamble_imports: str = "") -> list[str]:
    """The findings of one source read alone (see find_forbidden_in_cells). A source that does
    not parse gets one finding saying so."""
    return find_forbidden_in_cells({filename: source}, preamble_imports)[filename]
