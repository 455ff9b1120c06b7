"""Mutants of the reference: each graded unit's code with one plausible bug put in.

A mutant changes one span of a unit's solution lines (between ``### BEGIN SOLUTION`` and
``### END SOLUTION``; signatures and docstrings are handed out, so never mutated) and
nothing else, so its diff is that one span. Spans are found with the standard library's
``ast`` (exact byte positions of every node) and replaced as text: the rest of the cell
keeps its formatting and comments, as libcst would keep them, without a second parser.

Why not a mutation library: mutmut 3 (libcst) rewrites a package into trampolines that
pick a mutant by environment variable under pytest, and cosmic-ray (parso) mutates files
on disk for its own test command and session database. Both run *their* tests on *their*
module; here a mutant is a notebook cell judged by the grader, in its sandbox. Their
generic operators are short and are all here (arithmetic, comparison, boolean, number and
keyword replacement, argument removal, augmented assignment); what neither has, and what
students of this assignment get wrong, are the tensor operators: a missing or extra
transpose, a reduction or softmax over the wrong dimension, a dropped bias, an off-by-one
time index, a missing mask, a wrong scale, gates in the wrong order, an activation swapped,
a detached or in-place result, float32 where float64 is asked.

A mutant's id is its unit and a hash of its code: it stays the same while the unit's code
does (``mutants/equivalent.toml`` refers to mutants by id).
"""

import ast
import dataclasses
import difflib
import hashlib
from collections.abc import Iterable, Iterator

from solution import source as reference

# A change: (start byte, end byte, new text) in the unit's code, and the operator's name.
Change = tuple[int, int, str]

ACTIVATIONS = {"tanh": ("sigmoid", "relu"), "sigmoid": ("tanh",), "relu": ("tanh",),
               "softmax": ("log_softmax",), "log_softmax": ("softmax",)}
REDUCTIONS = {"sum": ("mean",), "mean": ("sum",), "argmax": ("argmin",), "max": ("min",)}
# Methods whose integer argument is a dimension (for naming the change "dimension").
DIM_METHODS = {"sum", "mean", "softmax", "log_softmax", "argmax", "max", "min", "squeeze", "unsqueeze", "cat",
               "stack", "unbind", "split", "chunk", "transpose", "flatten", "cumsum", "prod", "norm", "all", "any"}
MATMULS = {"mm", "matmul", "bmm"}
IN_PLACE = {"tanh", "sigmoid", "relu", "exp", "add", "mul", "sub", "div", "clamp", "masked_fill", "softmax"}
DROPPABLE_CALLS = {"masked_fill", "t", "clamp", "detach", "contiguous", "float", "double", "exp", "log"}
NEW_TENSORS = {"zeros", "ones", "empty", "full", "zeros_like", "ones_like", "empty_like", "full_like",
               "new_full", "new_zeros", "new_ones", "new_empty", "tensor", "arange"}
# Units whose outputs are gradients computed by hand: autograd never runs through them, so
# detaching their results cannot be a bug (every such mutant would be equivalent).
HAND_WRITTEN_GRADIENTS = {"rnn_step_backward", "rnn_backward"}
_BINOP_TEXT = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.MatMult: "@", ast.Pow: "**",
               ast.FloorDiv: "//", ast.Mod: "%", ast.BitOr: "|", ast.BitAnd: "&"}
_BINOP_SWAPS = {ast.Add: ("-",), ast.Sub: ("+",), ast.Mult: ("/",), ast.Div: ("*",), ast.MatMult: ("*",),
                ast.Pow: ("*",), ast.FloorDiv: ("/",), ast.BitOr: ("&",), ast.BitAnd: ("|",)}
_CMP_TEXT = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
             ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}
_CMP_SWAPS = {ast.Eq: "!=", ast.NotEq: "==", ast.Lt: "<=", ast.LtE: "<", ast.Gt: ">=", ast.GtE: ">",
              ast.Is: "is not", ast.IsNot: "is", ast.In: "not in", ast.NotIn: "in"}
_AUG_SWAPS = {ast.Add: ("=", "-="), ast.Sub: ("=", "+="), ast.Mult: ("=",), ast.BitOr: ("=", "&="),
              ast.BitAnd: ("=", "|=")}
# Expressions that need parentheses when they replace a larger expression.
_LOOSE = (ast.BinOp, ast.BoolOp, ast.Compare, ast.UnaryOp, ast.IfExp, ast.Lambda, ast.NamedExpr)


@dataclasses.dataclass(frozen=True)
class Mutant:
    unit: str
    operator: str  # which kind of bug, e.g. "transpose", "dimension", "dropped term"
    line: int  # line of the unit's cell where the change starts (1 = the cell's first line)
    before: str  # the lines changed, as the reference has them
    after: str  # the same lines in the mutant
    code: str  # the unit's whole cell, mutated

    @property
    def id(self) -> str:
        return f"{self.unit}-{hashlib.sha256(self.code.encode()).hexdigest()[:10]}"

    @property
    def change(self) -> str:
        return f"line {self.line}: {one_line(self.before)}  ->  {one_line(self.after)}"

    def diff(self) -> str:
        """The unified diff of the unit's cell, reference to mutant."""
        original = reference.unit_source(self.unit).splitlines(keepends=True)
        mutated = self.code.splitlines(keepends=True)
        return "".join(difflib.unified_diff(original, mutated, f"reference {self.unit}", f"mutant {self.id}", n=2))


def one_line(text: str, most: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= most else text[: most - 3] + "..."


class _Spans:
    """Byte offsets and text of the nodes of one unit's code (ast positions are UTF-8 bytes)."""

    def __init__(self, code: str):
        self.data = code.encode()
        starts, offset = [], 0
        for line in self.data.splitlines(keepends=True):
            starts.append(offset)
            offset += len(line)
        self.line_starts = starts

    def start(self, node) -> int:
        return self.line_starts[node.lineno - 1] + node.col_offset

    def end(self, node) -> int:
        return self.line_starts[node.end_lineno - 1] + node.end_col_offset

    def text(self, node) -> str:
        return self.data[self.start(node):self.end(node)].decode()

    def between(self, a, b) -> tuple[int, str]:
        """(offset, text) of what lies between the end of node a and the start of node b."""
        return self.end(a), self.data[self.end(a):self.start(b)].decode()

    def atom(self, node) -> str:
        """node's text, parenthesised when it could bind loosely where it goes."""
        text = self.text(node)
        negative_number = isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant)
        return f"({text})" if isinstance(node, _LOOSE) and not negative_number else text

    def replace(self, node, new: str) -> Change:
        return self.start(node), self.end(node), new


def _token_in_gap(spans: _Spans, left, right, token: str) -> tuple[int, int] | None:
    """Byte range of the operator token between two operands (parentheses may surround it)."""
    offset, gap = spans.between(left, right)
    found = gap.find(token)
    if found < 0:
        return None
    start = offset + len(gap[:found].encode())
    return start, start + len(token.encode())


def _method(call) -> str | None:
    """'mm' for x.mm(...) and torch.mm(...); 'tanh' for torch.tanh(...); None otherwise."""
    if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute):
        return call.func.attr
    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
        return call.func.id
    return None


def _is_module_call(call) -> bool:
    """torch.f(...), F.f(...), math.f(...): the function of a module, not a tensor's method."""
    return (isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name)
            and call.func.value.id in {"torch", "F", "math", "nn"})


# ---------------------------------------------------------------------------------------
# The operators: each yields (operator name, change) for one node
# ---------------------------------------------------------------------------------------


def arithmetic(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """a + b -> a - b, a * b -> a / b, a @ b -> a * b, ..."""
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAPS:
        where = _token_in_gap(spans, node.left, node.right, _BINOP_TEXT[type(node.op)])
        if where:
            for new in _BINOP_SWAPS[type(node.op)]:
                yield "arithmetic", (*where, new)


def dropped_term(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """a + b -> a and -> b (a dropped bias or term); a * s, a / s -> a (a dropped scale)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        yield "dropped term", spans.replace(node, spans.atom(node.left))
        if isinstance(node.op, (ast.Add, ast.Mult)):
            yield "dropped term", spans.replace(node, spans.atom(node.right))


def comparison(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """== -> !=, < -> <=, is -> is not, ... (one comparison of a chain at a time)."""
    if isinstance(node, ast.Compare):
        left = node.left
        for op, right in zip(node.ops, node.comparators):
            where = _token_in_gap(spans, left, right, _CMP_TEXT[type(op)])
            if where:
                yield "comparison", (*where, _CMP_SWAPS[type(op)])
            left = right


def boolean(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """and <-> or; not x -> x; -x -> x; True <-> False."""
    if isinstance(node, ast.BoolOp):
        token, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
        where = _token_in_gap(spans, node.values[0], node.values[1], token)
        if where:
            yield "boolean", (*where, new)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        yield "boolean" if isinstance(node.op, ast.Not) else "sign", spans.replace(node, spans.atom(node.operand))
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        yield "boolean", spans.replace(node, str(not node.value))


def condition(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """if c: -> if not (c):; a if c else b -> a, -> b (a branch never or always taken)."""
    if isinstance(node, (ast.If, ast.While)):
        yield "condition", spans.replace(node.test, f"not {spans.atom(node.test)}")
    elif isinstance(node, ast.IfExp):
        yield "condition", spans.replace(node, spans.atom(node.body))
        yield "condition", spans.replace(node, spans.atom(node.orelse))


def number(node, spans: _Spans, parent) -> Iterator[tuple[str, Change]]:
    """An integer n -> n + 1, n - 1 ("dimension" where it is one); a float x -> 0.0, 2x."""
    if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
        return
    if isinstance(node.value, int):
        name = "dimension" if _is_dimension(node, parent) else "number"
        for new in (node.value + 1, node.value - 1):
            yield name, spans.replace(node, str(new))
    elif isinstance(node.value, float):
        for new in (0.0, node.value * 2):
            if new != node.value:
                yield "number", spans.replace(node, repr(new))


def _is_dimension(node, parent) -> bool:
    if isinstance(parent, ast.keyword):
        return parent.arg == "dim"
    if isinstance(parent, ast.Tuple):  # dim=(2, 3)
        return True
    return isinstance(parent, ast.Call) and _method(parent) in DIM_METHODS and node in parent.args[-1:]


def negative_index(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """-1 as a whole (a last dimension, a last step) -> 0 and -2."""
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) is int):
        for new in (-node.operand.value + 1, -node.operand.value - 1):
            yield "dimension", spans.replace(node, str(new))


def string(node, spans: _Spans, parent) -> Iterator[tuple[str, Change]]:
    """A compared string ("attn") -> another; reduction="sum" -> "mean"."""
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return
    if isinstance(parent, ast.Compare):
        yield "string", spans.replace(node, f'"{node.value}X"')
    elif isinstance(parent, ast.keyword) and parent.arg == "reduction":
        for new in {"sum": ("mean",), "mean": ("sum",)}.get(node.value, ()):
            yield "reduction", spans.replace(node, f'"{new}"')


def augmented(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """x += y -> x = y, x -= y; x |= m -> x = m."""
    if isinstance(node, ast.AugAssign) and type(node.op) in _AUG_SWAPS:
        token = _BINOP_TEXT[type(node.op)] + "="
        where = _token_in_gap(spans, node.target, node.value, token)
        if where:
            for new in _AUG_SWAPS[type(node.op)]:
                yield "augmented assignment", (*where, new)


def dropped_argument(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """f(x, dim=1, ignore_index=i) -> without one keyword (its default instead)."""
    if not isinstance(node, ast.Call):
        return
    arguments = sorted([*node.args, *node.keywords], key=spans.start)
    for i, argument in enumerate(arguments):
        if not isinstance(argument, ast.keyword) or argument.arg is None:
            continue
        if i > 0:  # from the end of the argument before it: its comma goes too
            start, end = spans.end(arguments[i - 1]), spans.end(argument)
        elif len(arguments) > 1:
            start, end = spans.start(argument), spans.start(arguments[1])
        else:
            start, end = spans.start(argument), spans.end(argument)
        name = "mask" if "ignore" in argument.arg or "mask" in argument.arg else "dropped argument"
        yield name, (start, end, "")


def activation(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """torch.tanh -> torch.sigmoid, torch.relu; softmax -> log_softmax."""
    method = _method(node)
    if method in ACTIVATIONS and isinstance(node.func, ast.Attribute):
        end = spans.end(node.func)
        start = end - len(method)
        for new in ACTIVATIONS[method]:
            yield "activation", (start, end, new)


def reduction(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """x.sum(...) -> x.mean(...), argmax -> argmin, ..."""
    method = _method(node)
    if method in REDUCTIONS and isinstance(node.func, ast.Attribute):
        end = spans.end(node.func)
        for new in REDUCTIONS[method]:
            yield "reduction", (end - len(method), end, new)


def transpose(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """x.t() -> x; in a matrix product, an operand y -> y.t() (bmm: y.transpose(1, 2))."""
    method = _method(node)
    if method == "t" and isinstance(node.func, ast.Attribute) and not node.args:
        yield "transpose", spans.replace(node, spans.text(node.func.value))
    operands = []
    if method in MATMULS or method == "addmm":
        operands = list(node.args[-2:]) if _is_module_call(node) else [node.func.value, *node.args[:1]]
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
        operands = [node.left, node.right]
    flip = ".transpose(1, 2)" if method == "bmm" else ".t()"
    for operand in operands:
        if not (_method(operand) == "t" and not operand.args):
            yield "transpose", spans.replace(operand, spans.atom(operand) + flip)


def index(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """x[:, t] -> x[:, t - 1], x[:, t + 1]; a slice's bound dropped or moved by one."""
    if not isinstance(node, ast.Subscript):
        return
    parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    for part in parts:
        if isinstance(part, ast.Name):
            for new in (f"{part.id} - 1", f"{part.id} + 1"):
                yield "time index", spans.replace(part, new)
        elif isinstance(part, ast.Slice):
            for bound in (part.lower, part.upper):
                if bound is not None:
                    yield "slice", spans.replace(part, _slice_without(spans, part, bound))


def _slice_without(spans: _Spans, part: ast.Slice, dropped) -> str:
    lower = "" if part.lower is None or part.lower is dropped else spans.text(part.lower)
    upper = "" if part.upper is None or part.upper is dropped else spans.text(part.upper)
    return f"{lower}:{upper}"


def loop(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """range(T) -> range(T - 1), range(1, T); reversed(xs) -> xs; xs.unbind(1) -> reversed."""
    if not isinstance(node, ast.For):
        return
    it = node.iter
    if _method(it) == "range" and len(it.args) == 1:
        bound = spans.atom(it.args[0])
        yield "time index", spans.replace(it, f"range({bound} - 1)")
        yield "time index", spans.replace(it, f"range(1, {bound})")
    if _method(it) == "reversed" and len(it.args) == 1:
        yield "time order", spans.replace(it, spans.text(it.args[0]))
    else:
        yield "time order", spans.replace(it, f"reversed({spans.text(it)})")


def swapped(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """i, f, o = ... -> f, i, o = ... (gates, outputs in the wrong order); f(a, b) -> f(b, a)."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Tuple):
        names = node.targets[0].elts
        for a, b in zip(names, names[1:]):
            yield "swapped order", _swap(spans, a, b)
    elif isinstance(node, ast.Call) and len(node.args) >= 2 and not any(isinstance(a, ast.Starred) for a in node.args):
        for a, b in zip(node.args, node.args[1:]):
            yield "swapped arguments", _swap(spans, a, b)
    elif isinstance(node, (ast.List, ast.Tuple)) and isinstance(node.ctx, ast.Load):
        for a, b in zip(node.elts, node.elts[1:]):
            yield "swapped order", _swap(spans, a, b)


def _swap(spans: _Spans, a, b) -> Change:
    gap = spans.between(a, b)[1]
    return spans.start(a), spans.end(b), spans.text(b) + gap + spans.text(a)


def operand_order(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """a - b -> b - a, a / b -> b / a, a @ b -> b @ a."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Sub, ast.Div, ast.MatMult)):
        yield "swapped arguments", _swap(spans, node.left, node.right)


# Names a wrong variable is never taken from: modules, builtins, the module itself.
NOT_VARIABLES = {"torch", "F", "math", "nn", "self", "range", "reversed", "len", "super", "print", "isinstance",
                 "zip", "enumerate", "int", "float", "min", "max", "sum", "list", "tuple", "dict"}


def _variables(statement) -> tuple[list[str], list[str]]:
    """The plain names and the self.<name> attributes one statement reads or writes."""
    names, attributes = [], []
    for node in ast.walk(statement):
        if isinstance(node, ast.Name) and node.id not in NOT_VARIABLES and node.id not in names:
            names.append(node.id)
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
              and node.attr not in attributes):
            attributes.append(node.attr)
    return names, attributes


def first_bindings(function) -> dict[str, int]:
    """{name: the line where function first binds it} (its parameters: the def's line)."""
    bound = {a.arg: function.lineno for a in function.args.args}
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound[node.id] = min(bound.get(node.id, node.lineno), node.lineno)
    return bound


def wrong_variable(statement, spans: _Spans, bound: dict[str, int]) -> Iterator[tuple[str, Change]]:
    """In one statement, a variable read -> another variable it reads or writes that is bound
    before it (prev_h for h0, T for N, self.Wh for self.Wx, ...): a wrong but defined name."""
    names, attributes = _variables(statement)
    candidates = [n for n in names if bound.get(n, statement.lineno) < statement.lineno]
    for node in ast.walk(statement):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in candidates:
            for other in candidates:
                if other != node.id:
                    yield "wrong variable", spans.replace(node, other)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and isinstance(node.value, ast.Name)
              and node.value.id == "self" and node.attr in attributes):
            for other in attributes:
                if other != node.attr:
                    yield "wrong variable", spans.replace(node, f"self.{other}")


def scale(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """math.sqrt(H) -> H (1/H for 1/sqrt(H))."""
    if _method(node) == "sqrt" and len(node.args) == 1:
        yield "scale", spans.replace(node, spans.atom(node.args[0]))


def dropped_call(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """x.masked_fill(m, 0) -> x (a missing mask), x.clamp(...) -> x, ..."""
    method = _method(node)
    if method in DROPPABLE_CALLS and isinstance(node.func, ast.Attribute) and not _is_module_call(node):
        if method != "t":  # transpose() names that one
            name = "mask" if method == "masked_fill" else "dropped call"
            yield name, spans.replace(node, spans.text(node.func.value))


def in_place(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """torch.tanh(x) -> x.tanh_(), x.add(y) -> x.add_(y): the input overwritten."""
    method = _method(node)
    if method not in IN_PLACE or not isinstance(node.func, ast.Attribute):
        return
    if _is_module_call(node) and node.func.value.id == "torch" and node.args:
        rest = ", ".join(spans.text(a) for a in [*node.args[1:], *node.keywords])
        yield "in place", spans.replace(node, f"{spans.atom(node.args[0])}.{method}_({rest})")
    elif not _is_module_call(node):
        end = spans.end(node.func)
        yield "in place", (end, end, "_")


def float32(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """dtype=x.dtype -> dtype=torch.float32; torch.zeros_like(x) -> float32 zeros."""
    method = _method(node)
    if method not in NEW_TENSORS:
        return
    for keyword in node.keywords:
        if keyword.arg == "dtype":
            if spans.text(keyword.value) not in {"torch.float32", "torch.float"}:
                yield "float32", spans.replace(keyword.value, "torch.float32")
            return
    if method.endswith("_like") and node.args:
        end = spans.end(node) - 1  # before the closing parenthesis
        yield "float32", (end, end, ", dtype=torch.float32")


def result_changed(node, spans: _Spans, unit: str) -> Iterator[tuple[str, Change]]:
    """y = expr -> y = (expr).detach() (no gradient flows back), and -> (expr).float()."""
    if not isinstance(node, ast.Assign) or not isinstance(node.value, (ast.Call, ast.BinOp, ast.Subscript)):
        return
    value = spans.atom(node.value)
    if unit not in HAND_WRITTEN_GRADIENTS:
        yield "detached", spans.replace(node.value, f"{value}.detach()")
    yield "float32", spans.replace(node.value, f"{value}.float()")


def dropped_statement(node, spans: _Spans) -> Iterator[tuple[str, Change]]:
    """A statement that only updates something (x[t] = ..., x |= ..., xs.append(...)) -> pass."""
    updates = (isinstance(node, ast.AugAssign)
               or (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript))
               or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)))
    if updates:
        yield "dropped statement", spans.replace(node, "pass")


NODE_OPERATORS = (transpose, activation, reduction, scale, in_place, float32, dropped_call, index, loop, swapped,
                  arithmetic, dropped_term, operand_order, comparison, boolean, condition, augmented,
                  dropped_argument, negative_index, dropped_statement)


# ---------------------------------------------------------------------------------------
# Mutants of a unit
# ---------------------------------------------------------------------------------------


def solution_lines(code: str) -> set[int]:
    """Numbers (1-based) of the lines between the unit's solution markers."""
    inside, lines = False, set()
    for number_, line in enumerate(code.splitlines(), 1):
        if line.strip() == reference.BEGIN_SOLUTION:
            inside = True
        elif line.strip() == reference.END_SOLUTION:
            inside = False
        elif inside:
            lines.add(number_)
    return lines


def _changes(tree, spans: _Spans, unit: str, lines: set[int]) -> Iterator[tuple[str, ast.AST, Change]]:
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            bound = first_bindings(function)
            for statement in ast.walk(function):
                if (isinstance(statement, ast.stmt) and not isinstance(statement, (ast.For, ast.If, ast.While,
                                                                                    ast.FunctionDef, ast.With))
                        and set(range(statement.lineno, statement.end_lineno + 1)) <= lines):
                    for name, change in wrong_variable(statement, spans, bound):
                        yield name, statement, change
    for node in ast.walk(tree):
        if not hasattr(node, "lineno") or not set(range(node.lineno, node.end_lineno + 1)) <= lines:
            continue
        parent = parents.get(node)
        found: list[Iterable] = [op(node, spans) for op in NODE_OPERATORS]
        found += [number(node, spans, parent), string(node, spans, parent), result_changed(node, spans, unit)]
        for changes in found:
            for name, change in changes:
                yield name, node, change


def unit_mutants(unit: str) -> list[Mutant]:
    """Every mutant of one graded unit: distinct, each of which still parses."""
    code = reference.unit_source(unit)
    spans = _Spans(code)
    tree = ast.parse(code)
    seen, mutants = {code}, []
    for name, node, (start, end, new) in _changes(tree, spans, unit, solution_lines(code)):
        mutated = (spans.data[:start] + new.encode() + spans.data[end:]).decode()
        if mutated in seen:
            continue
        seen.add(mutated)
        try:
            ast.parse(mutated)
        except SyntaxError:
            continue
        line = spans.data[:start].count(b"\n") + 1
        before, after = _changed_lines(spans.data, start, end, new.encode())
        mutants.append(Mutant(unit, name, line, before, after, mutated))
    return sorted(mutants, key=lambda m: (m.line, m.operator, m.code))


def _changed_lines(data: bytes, start: int, end: int, new: bytes) -> tuple[str, str]:
    """The whole lines a change touches, before and after it (for reports)."""
    first = data.rfind(b"\n", 0, start) + 1
    last = data.find(b"\n", end)
    last = len(data) if last < 0 else last
    return data[first:last].decode(), (data[first:start] + new + data[end:last]).decode()


def all_mutants(units=None) -> list[Mutant]:
    """The mutants of the given graded units (all of them by default), in the notebook's order."""
    known = list(reference.graded_units())
    for unit in units or ():
        if unit not in known:
            raise ValueError(f"no graded unit {unit!r}; the units are: {', '.join(known)}")
    return [m for unit in known if not units or unit in units for m in unit_mutants(unit)]
