"""A catalogue of adversarial submissions: code that tries to fool, crash or rob the grader.

Each ``Submission`` is the instructor's notebook with some units' cells replaced by attacks
(``Attack``: the unit, what it tries, its code, the outcome it must get) and some cells
removed (``omit``: those units are not run at all, which keeps the slow ones out of attacks
that do not need them). Attacks that target different units share one submission, so that
one grading checks several; each attack is written so that its assertion stays clear:

* ``outcome="zero"``: every test of the attacked unit scores 0 and each reason matches
  ``reason`` (a regular expression): the attack gained nothing.
* ``outcome="full"``: the unit keeps every point; the attack (e.g. a network connection,
  a gigabyte of output) is harmless and the cell's honest code counts as honest code.
  Where the attack is a probe (can it reach the network, the reference?), the cell raises
  with "LEAK" when it succeeds, so a success costs points and shows in the reason.

Every unit that is neither attacked nor omitted keeps all its points. ``MALFORMED`` lists
notebook files that are not notebooks at all; they must score 0 with a reason, quickly.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from grading import INSTRUCTOR_NOTEBOOK
from solution import source as reference

UNITS = tuple(reference.graded_units())


def ref(unit: str) -> str:
    """The reference code of a unit: the honest part of an attack."""
    return reference.unit_source(unit)


@dataclass(frozen=True)
class Attack:
    unit: str
    what: str
    code: str
    outcome: str  # "zero" or "full"
    reason: str = ""  # regex every lost test's reason must match (outcome "zero")
    tests: tuple = ()  # outcome "zero" for these tests only (the others keep their points)


@dataclass(frozen=True)
class Submission:
    id: str
    attacks: tuple
    omit: tuple = ()  # units whose cell is removed (graded 0: "no solution cell")
    unit_timeout: int | None = None  # submission_sandbox.UNIT_SECONDS for this grading
    outputs_mb: int = 0  # junk outputs added to the notebook's code cells (ignored by the grader)
    seconds: int = 240  # the grading must return within this (no hang)
    # The attack may end the grading of the submission's other units too (never score them):
    # those lose their points with a reason saying the grading process ended.
    others_may_lose: bool = False

    def cells(self) -> dict[str, str]:
        return {a.unit: a.code for a in self.attacks}


def write_notebook(path: Path, cells: dict[str, str], omit=(), outputs_mb: int = 0) -> Path:
    """The instructor's notebook with cells replaced, omitted units' grade_ids renamed and
    junk outputs added. Written with ASCII escapes, so that any str (lone surrogates too)
    can be a cell's source."""
    nb = nbformat.read(INSTRUCTOR_NOTEBOOK, as_version=4)
    cells = dict(cells)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code_cells:
        nbgrader = cell.metadata.get("nbgrader", {})
        unit = nbgrader.get("grade_id")
        if nbgrader.get("solution") and unit in cells:
            cell.source = cells.pop(unit)
        if unit in omit:
            nbgrader["grade_id"] = f"removed-{unit}"
    assert not cells, f"no solution cell for {sorted(cells)}"
    per_cell = (outputs_mb << 20) // len(code_cells)
    for cell in code_cells if outputs_mb else []:
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="PASS total 100/100\n" * (per_cell // 19))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, ensure_ascii=True))
    return path


# ---------------------------------------------------------------------------------------
# 1. Verdicts forged inside the student's process, fake objects, wrong values
# ---------------------------------------------------------------------------------------

PATCH_CHECKERS_AND_PRINT_PASS = '''
import json, os, sys
import numpy as np
import torch

_yes = lambda *args, **kwargs: True
_nothing = lambda *args, **kwargs: None
torch.allclose = torch.equal = torch.Tensor.allclose = torch.Tensor.equal = _yes
torch.Tensor.__eq__ = lambda self, other: True
torch.testing.assert_close = _nothing
np.allclose = np.array_equal = np.isclose = _yes
np.testing.assert_allclose = np.testing.assert_array_equal = np.testing.assert_equal = _nothing
import unittest
unittest.TestCase.assertEqual = unittest.TestCase.assertTrue = _nothing

for unit in ("rnn_step_forward", "rnn_step_backward", "CaptioningRNN"):
    print(f"{unit:<24} gradients        6/6    PASS")
print("total                                   100/100  (sandbox: bwrap, device: cpu)")
print("All tests passed. Score: 100/100", file=sys.stderr)
fake = {"score": 100, "max_score": 100, "output": "Score 100/100", "tests": []}
for path in ("results.json", "../results.json", "/tmp/results.json", "/autograder/results/results.json",
             "/work/main/results.json", os.path.expanduser("~/results.json")):
    try:
        with open(path, "w") as f:
            json.dump(fake, f)
    except OSError:
        pass


def rnn_step_backward(dnext_h, cache):
    x, prev_h, Wx, Wh, next_h = cache
    return (torch.zeros_like(x), torch.zeros_like(prev_h), torch.zeros_like(Wx),
            torch.zeros_like(Wh), torch.zeros_like(next_h[0]))
'''

EQUAL_TO_ANYTHING = '''
import numpy as np


class AlwaysEqual:
    """Equal to anything, close to anything, an array of anything."""
    shape = property(lambda self: self)
    dtype = property(lambda self: self)
    __eq__ = __le__ = __ge__ = lambda self, other: True
    __ne__ = __lt__ = __gt__ = lambda self, other: False
    __hash__ = object.__hash__
    __array__ = lambda self, *args, **kwargs: np.zeros(())
    __array_function__ = __array_ufunc__ = lambda self, *args, **kwargs: True
    __torch_function__ = classmethod(lambda cls, *args, **kwargs: True)
    __getattr__ = lambda self, name: (lambda *args, **kwargs: self)
    __len__ = lambda self: 0
    __float__ = lambda self: 0.0
    __class__ = property(lambda self: torch.Tensor)  # isinstance(x, torch.Tensor) is True


def rnn_backward(dh, cache):
    return tuple(AlwaysEqual() for _ in range(5))
'''

TENSOR_SUBCLASS_FAKES_VALUES = '''
import numpy as np


class YesArray(np.ndarray):
    __eq__ = lambda self, other: np.ones(np.shape(self), bool)
    __array_function__ = lambda self, *args, **kwargs: True


class Liar(torch.Tensor):
    """Looks like the right answer to anyone who asks it."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in ("__eq__", "allclose", "equal", "isclose"):
            return True
        if name in ("numpy", "__array__"):
            return np.zeros(tuple(args[0].shape)).view(YesArray)
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **(kwargs or {}))
        return out.as_subclass(cls) if isinstance(out, torch.Tensor) else out

    def numpy(self, *args, **kwargs):
        return np.zeros(tuple(self.shape)).view(YesArray)

    __array__ = numpy
    __eq__ = lambda self, other: True


class WordEmbedding(nn.Module):
    def __init__(self, vocab_size, embed_size):
        super().__init__()
        self.W_embed = nn.Parameter(torch.randn(vocab_size, embed_size))

    def forward(self, x):
        return torch.zeros(*x.shape, self.W_embed.shape[1], dtype=torch.float64).as_subclass(Liar)
'''

RETURNS_NAN = '''
def temporal_softmax_loss(x, y, ignore_index=None):
    return (x * float("nan")).sum()
'''

WRONG_DTYPE_AND_SHAPE_LSTM = ref("LSTM").replace(
    "        return next_h, next_c", "        return next_h.float(), next_c.float()  # float32").replace(
    "        return hn", "        return hn.reshape(-1)  # flat")

INT_WHERE_FLOAT = ref("dot_product_attention").replace(
    "    return attn, attn_weights", "    return attn.round().long(), attn_weights.round().long()")

OVERRIDES_OTHER_UNITS = '''
def lstm_gates(a, prev_c):
    """A wrong lstm_gates: only this cell may suffer from it."""
    return torch.zeros_like(prev_c), torch.zeros_like(prev_c)


def dot_product_attention(prev_h, A):
    return torch.zeros_like(prev_h), torch.zeros(A.shape[0], 4, 4, dtype=A.dtype)


def rnn_forward(*args):
    raise RuntimeError("overridden")


LSTM = temporal_softmax_loss = WordEmbedding = None


''' + ref("AttentionLSTM")

FORGED_VERDICTS = Submission("forged-verdicts", (
    Attack("rnn_step_backward", "patches torch/numpy/unittest checkers and Tensor.__eq__, prints "
           "PASS lines and a 100/100 total, writes fake results.json wherever it can",
           PATCH_CHECKERS_AND_PRINT_PASS, "zero", r"relative error"),
    Attack("rnn_backward", "returns objects equal to anything", EQUAL_TO_ANYTHING, "zero",
           r"AlwaysEqual"),
    Attack("WordEmbedding", "a Tensor subclass whose __torch_function__, numpy() and __array__ fake values",
           TENSOR_SUBCLASS_FAKES_VALUES, "zero", r"relative error|does not require grad"),
    Attack("temporal_softmax_loss", "returns NaN", RETURNS_NAN, "zero", r"NaN"),
    Attack("LSTM", "float32 where float64 is expected, a flat output where (N, T, H) is",
           WRONG_DTYPE_AND_SHAPE_LSTM, "zero", r"dtype float32, expected float64|shape|Mismatch in shape"),
    Attack("dot_product_attention", "int64 where float64 is expected", INT_WHERE_FLOAT, "zero",
           r"dtype int64, expected float64|does not require grad"),
    Attack("AttentionLSTM", "redefines lstm_gates, dot_product_attention and other units' names "
           "badly (only AttentionLSTM may lose)", OVERRIDES_OTHER_UNITS, "zero",
           r"relative error|does not require grad"),
), outputs_mb=17)  # and 17 MB of fake "PASS" outputs in the notebook, under the size limit

# ---------------------------------------------------------------------------------------
# 2. Ending the process: exit, _exit, kill, at import and inside the function
# ---------------------------------------------------------------------------------------

PROCESS_ENDS = Submission("process-ends", (
    Attack("rnn_step_backward", "sys.exit(0) at import", "import sys\nsys.exit(0)\n" + ref("rnn_step_backward"),
           "zero", r"your cell failed to run: SystemExit"),
    Attack("rnn_backward", "os._exit(0) at import", "import os\nos._exit(0)\n" + ref("rnn_backward"),
           "zero", r"ended the process \(exit status 0\)"),
    Attack("WordEmbedding", "os.kill(os.getpid(), 9) at import",
           "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n" + ref("WordEmbedding"),
           "zero", r"killed \(signal 9"),
    Attack("temporal_softmax_loss", "sys.exit(0) inside the function",
           "import sys\n\ndef temporal_softmax_loss(x, y, ignore_index=None):\n    sys.exit(0)\n",
           "zero", r"SystemExit"),
    # Each test reports as it ends: step_forward, done before forward ends the process, counts.
    Attack("LSTM", "os._exit(0) inside forward (step_forward is honest)", ref("LSTM").replace(
        "        hn = None\n", "        hn = None\n        os._exit(0)\n"), "zero", r"exit status 0",
        tests=("forward", "gradients")),
    Attack("dot_product_attention", "os.kill(os.getpid(), 9) inside the function",
           ref("dot_product_attention").replace('    attn, attn_weights = None, None\n',
                                                '    attn, attn_weights = None, None\n    os.kill(os.getpid(), 9)\n'),
           "zero", r"signal 9"),
    Attack("CaptioningRNN", "os._exit(0) in __init__", ref("CaptioningRNN").replace(
        "        super().__init__()\n", "        super().__init__()\n        os._exit(0)\n", 1),
        "zero", r"exit status 0"),
))

# Killing every process it can see ends its own sandbox (its group's), twice: only its own
# units lose, with that reason; the other groups run in sandboxes of their own.
KILLS_ITS_SANDBOX = Submission("kills-its-sandbox", (
    Attack("AttentionLSTM", "os.kill(-1, 9) at import: every process it can see",
           "import os\nos.kill(-1, 9)\n" + reference.strip_solutions(ref("AttentionLSTM")), "zero",
           r"ended early|killed|stopped|not written yet"),
), others_may_lose=True)

# A process that escapes its unit's process group (setsid, double fork) and waits to spoil
# the next unit's outputs: each unit's leftovers are killed before the next unit starts.
ESCAPE_AND_SPOIL = '''
import os as _os, time as _time
if _os.fork() == 0:
    _os.setsid()
    if _os.fork() == 0:
        _end = _time.monotonic() + 60
        while _time.monotonic() < _end:
            if _os.path.exists("temporal_softmax_loss.npz"):
                _time.sleep(0.2)
                with open("temporal_softmax_loss.npz", "wb") as _f:
                    _f.write(b"spoiled")
                break
            _time.sleep(0.01)
    _os._exit(0)
'''

LEAVES_A_PROCESS = Submission("leaves-a-process", (
    Attack("WordEmbedding", "honest, and leaves a setsid, double-forked process that waits to "
           "overwrite the next unit's outputs (temporal_softmax_loss.npz)",
           ESCAPE_AND_SPOIL + ref("WordEmbedding"), "full"),
))

# ---------------------------------------------------------------------------------------
# 3. Resources: endless loop, memory, output, network, fork bomb
# ---------------------------------------------------------------------------------------

GIGABYTE_OF_OUTPUT = '''
import os
_chunk = b"PASS total 100/100 " * (1 << 16) + b"\\n"
for _ in range((1 << 30) // len(_chunk)):
    os.write(1, _chunk)
for _ in range(64):
    os.write(2, _chunk)
''' + ref("WordEmbedding")

NETWORK = '''
import socket


def _reached(address, family=socket.AF_INET):
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(address)
        return True
    except OSError:
        return False


try:
    _resolved = socket.getaddrinfo("pypi.org", 443)
except OSError:
    _resolved = []
_leaks = [a for a in [("1.1.1.1", 80), ("8.8.8.8", 53), ("127.0.0.1", 22), ("127.0.0.1", 8888)] if _reached(a)]
if _reached("/run/docker.sock", socket.AF_UNIX) or _reached("/var/run/docker.sock", socket.AF_UNIX):
    _leaks.append("docker.sock")
if _resolved or _leaks:
    raise RuntimeError(f"LEAK: network reachable: {_leaks} {_resolved[:1]}")
''' + ref("temporal_softmax_loss")

FORK_BOMB = '''
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
''' + ref("LSTM")

RESOURCES = Submission("resources", (
    Attack("rnn_step_backward", "an endless loop inside the function",
           "def rnn_step_backward(dnext_h, cache):\n    while True:\n        pass\n", "zero", r"time limit"),
    Attack("rnn_backward", "a huge allocation at import (2**40 floats, then 1 GB at a time up to 16 GB)",
           "try:\n    _big = torch.empty(2**40, dtype=torch.float64)\nexcept RuntimeError:\n    pass\n"
           "_hog = [torch.empty(1 << 27, dtype=torch.float64) for _ in range(16)]\n" + ref("rnn_backward"),
           "zero", r"can't allocate|MemoryError|memory|signal 9"),
    Attack("WordEmbedding", "a gigabyte of output on stdout and stderr, then honest code",
           GIGABYTE_OF_OUTPUT, "full"),
    Attack("temporal_softmax_loss", "opens network sockets (LEAK if any connects), then honest code",
           NETWORK, "full"),
    Attack("LSTM", "a fork bomb at import", FORK_BOMB, "zero", r"time limit|CPU time|signal|ended the process"),
    # dot_product_attention runs after the fork bomb, in the same worker: it keeps its points.
), omit=("AttentionLSTM", "CaptioningRNN"), unit_timeout=10)

# ---------------------------------------------------------------------------------------
# 4. Looking for the reference, the hidden expected outputs and the grader's secret
# ---------------------------------------------------------------------------------------

FIND_FILES = '''
import importlib, os, sys
_found = []
for _name in ("solution", "solution.captioning", "solution.source", "captioning", "autograder",
              "autograder.grade", "autograder.checks", "grading", "tests.grading"):
    try:
        importlib.import_module(_name)
        _found.append("import " + _name)
    except Exception:
        pass
for _path in ("/work/main/solution/captioning.py", "/work/main/autograder/.grader_secret",
              "/work/main/autograder/checks.py", "/work/main/tests/grading.py", "/work/main/data/coco.pt",
              "/work/shared", "/work/main/assignment", "/root/.bash_history", "/etc/passwd", "/etc/shadow"):
    try:
        with open(_path, "rb") as _f:
            _f.read(1)
        _found.append(_path)
    except IsADirectoryError:
        _found.append(_path)
    except OSError:
        pass
_names = {"captioning.py", ".grader_secret", "points.toml", "rnn_captioning.ipynb", "grading.py", "coco.pt"}
for _root, _dirs, _files in os.walk("/"):
    if _root in ("/proc", "/sys", "/dev"):
        _dirs.clear()
        continue
    _found += [os.path.join(_root, f) for f in _files if f in _names]
_found += [k for k in os.environ if "SECRET" in k.upper() or "GRADER" in k.upper()]
import gc
import numpy as np
for _inputs in [o for o in gc.get_objects() if type(o) is np.lib.npyio.NpzFile]:
    _found += [k for k in _inputs.files if any(w in k for w in ("expected", "numeric", "reference", "answer"))]
if _found:
    raise RuntimeError(f"LEAK: {_found[:5]}")
raise RuntimeError("probe: nothing found")
'''


def find_reference(unit: str, marker: str) -> str:
    """A probe for the reference code of the unit it is the cell of: in the worker's files,
    in sys.modules, in gc (the job), in the frames that called it. marker is a line of that
    reference."""
    return f'''
import gc, inspect, os, sys, types
_unit, _marker = {unit!r}, {marker!r}
_found = []
for _root, _dirs, _files in os.walk(os.path.dirname(os.path.abspath(sys.argv[0]))):
    for _f in _files:
        _path = os.path.join(_root, _f)
        if _marker.encode() in open(_path, "rb").read():
            _found.append(_path)
for _name, _module in list(sys.modules.items()):
    if isinstance(getattr(_module, "__dict__", None), dict) and _unit in _module.__dict__:
        _found.append("sys.modules " + _name)
for _obj in gc.get_objects():
    if isinstance(_obj, (types.FunctionType, type)) and _obj.__name__ == _unit:
        _found.append("gc " + repr(_obj))
    elif isinstance(_obj, (dict, list, tuple)):
        for _item in (_obj.values() if isinstance(_obj, dict) else _obj):
            # This probe's own source holds the marker too (the job's copy of this cell).
            if isinstance(_item, str) and _marker in _item and _item != _marker and "_unit, _marker =" not in _item:
                _found.append("gc string")
for _frame in inspect.stack():
    if _unit in _frame.frame.f_globals or _unit in _frame.frame.f_locals:
        _found.append("frame " + _frame.filename)
if _found:
    raise RuntimeError(f"LEAK: {{_found[:5]}}")
raise RuntimeError("probe: nothing found")
'''


# The reference LSTM's line, in the job of the attention_lstm and captioner groups, which run
# beside this unit's group in the same sandbox. Built at run time, so that this cell's own
# source (held by its group's process) does not contain it.
READ_SIBLINGS = '''
import os, time
_marker = ("ifo, g = a.split([3 * H, H]" + ", dim=1)").encode()
_found, _seen, _read = [], set(), set()
_deadline = time.monotonic() + 10  # AttentionLSTM keeps its group alive for 8 s
while time.monotonic() < _deadline and not _found:
    for _pid in [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:
        _seen.add(_pid)
        try:  # its memory, through /proc/PID/mem (the access check of ptrace attach)
            with open(f"/proc/{_pid}/maps") as _maps, open(f"/proc/{_pid}/mem", "rb", 0) as _mem:
                _read.add(_pid)
                for _line in _maps:
                    _range, _perms, *_rest = _line.split()
                    _start, _end = (int(x, 16) for x in _range.split("-"))
                    if "r" not in _perms or _rest[-1].startswith("/") or _end - _start > 1 << 30:
                        continue  # file mappings (libraries) hold no job; the heap does
                    try:
                        _mem.seek(_start)
                        if _marker in _mem.read(_end - _start):
                            _found.append(f"/proc/{_pid}/mem")
                    except (OSError, ValueError, OverflowError):
                        pass
        except OSError:
            pass
        try:  # its job pipe, through /proc/PID/fd
            for _fd in os.listdir(f"/proc/{_pid}/fd"):
                try:
                    _f = os.open(f"/proc/{_pid}/fd/{_fd}", os.O_RDONLY | os.O_NONBLOCK)
                    if _marker in os.read(_f, 1 << 24):
                        _found.append(f"/proc/{_pid}/fd/{_fd}")
                    os.close(_f)
                except OSError:
                    pass
        except OSError:
            pass
    time.sleep(0.2)
if _found:
    raise RuntimeError(f"LEAK: {_found[:5]}")
raise RuntimeError(f"probe: nothing found in {len(_seen)} other processes ({len(_read)} readable)")
'''

CHEAT_WHEN_GRADED = '''
import os, socket
_graded = (os.environ.get("NBGRADER_EXECUTION") or socket.gethostname() == "sandbox" or os.getuid() == 65534
           or "grade" in os.getcwd() or os.environ.get("HOME") == "/tmp" or not os.environ.get("JPY_PARENT_PID"))
if _graded:
    torch.allclose = lambda *args, **kwargs: True


def temporal_softmax_loss(x, y, ignore_index=None):
    if _graded:  # what a cheat would do when it believes nobody compares
        return torch.zeros((), dtype=x.dtype)
    raise NotImplementedError("only ever cheats")
'''

PROBES = Submission("probes", (
    Attack("WordEmbedding", "imports and opens the reference, the grader and its secret; walks the "
           "whole filesystem for them; reads the environment and the input file's names",
           FIND_FILES, "zero", r"probe: nothing found"),
    Attack("dot_product_attention", "looks for the reference dot_product_attention in the job's "
           "files, sys.modules, gc and the calling frames",
           find_reference("dot_product_attention", "scores = torch.bmm(prev_h.unsqueeze(1), A_flat)"),
           "zero", r"probe: nothing found"),
    Attack("AttentionLSTM", "looks for the reference AttentionLSTM (its sandbox holds the "
           "reference LSTM and dot_product_attention), after 8 s of sleep: its group's process "
           "holds the reference LSTM meanwhile, for the LSTM probe to look for",
           "import time\ntime.sleep(8)\n" + find_reference("AttentionLSTM", "attn.mm(self.Wattn) + self.b"),
           "zero", r"probe: nothing found"),
    Attack("CaptioningRNN", "looks for the reference CaptioningRNN (its sandbox holds every other "
           "unit's reference)", find_reference("CaptioningRNN", "class CaptioningRNN(nn.Module)"),
           "zero", r"probe: nothing found"),
    Attack("LSTM", "reads the memory, the open files and the job pipes of the other processes "
           "in its sandbox (/proc/PID/mem, /proc/PID/fd) for the reference LSTM that "
           "the attention_lstm and captioner groups hold", READ_SIBLINGS, "zero",
           r"probe: nothing found in [1-9]"),
    Attack("temporal_softmax_loss", "cheats only when the environment, hostname, uid or cwd say it "
           "is being graded", CHEAT_WHEN_GRADED, "zero", r"relative error|does not require grad"),
))

# ---------------------------------------------------------------------------------------
# 5. Tampering with the worker: its modules, numpy, other units' output files, the guard
# ---------------------------------------------------------------------------------------

PATCH_WORKER_MODULES = '''
import json, sys
import numpy as np
import graded_tests

def _zeros(ns, inputs, *shared):
    return {n: torch.zeros_like(inputs[k]) for n, k in
            [("dx", "x"), ("dprev_h", "prev_h"), ("dWx", "Wx"), ("dWh", "Wh"), ("db", "b")]}

graded_tests.runner = lambda unit, test: _zeros
graded_tests.rnn_step_backward__gradients = _zeros
_savez = np.savez

def _forged_savez(file, *args, **arrays):
    _savez(file, **{k: np.zeros_like(v) for k, v in arrays.items()})

sys.modules["numpy"].savez = _forged_savez
_dump = json.dump
json.dump = lambda obj, f, *args, **kwargs: _dump({"errors": []}, f)
sys.modules["__main__"].describe = lambda exc: ""

def rnn_step_backward(dnext_h, cache):
    raise ValueError("not written")
'''


def forge_outputs(unit: str, outputs: dict[str, str]) -> str:
    """Code that writes <unit>.npz (zeros shaped like the named inputs, found in the job
    through gc) and <unit>.json (no errors) into the worker's output directory (its cwd)."""
    return f'''
import json, os, sys
import numpy as np
import gc
_forged = {{}}
for _inputs in [o for o in gc.get_objects() if type(o) is np.lib.npyio.NpzFile]:
    for _key in _inputs.files:
        if _key.startswith({unit + "/"!r}):
            _, _test, _case, _name = _key.split("/", 3)
            for _out, _like in {outputs!r}.items():
                if _name == _like:
                    _forged[f"{{_test}}/{{_case}}/{{_out}}"] = np.zeros_like(_inputs[_key], dtype=np.float64)
np.savez({unit + ".npz"!r}, **_forged)
with open({unit + ".json"!r}, "w") as _f:
    json.dump({{"errors": []}}, _f)
'''


LSTM_THROUGH_ATEN = ref("LSTM") + '''


def _torch_order(W):
    """Our gate order is i, f, o, g; PyTorch's is i, f, g, o."""
    i, f, o, g = W.chunk(4, dim=-1)
    return torch.cat([i, f, g, o], dim=-1)


def _step_forward(self, x, prev_h, prev_c):
    cell = getattr(getattr(torch._C, "_Variable" + "Functions"), "lstm" + "_cell")
    return cell(x, [prev_h, prev_c], _torch_order(self.Wx).t(), _torch_order(self.Wh).t(),
                _torch_order(self.b), torch.zeros_like(self.b))


def _forward(self, x, h0):
    op = getattr(getattr(torch.ops, "aten"), "ls" + "tm")
    params = [_torch_order(self.Wx).t(), _torch_order(self.Wh).t(), _torch_order(self.b), torch.zeros_like(self.b)]
    hn, _, _ = op(x, [h0[None], torch.zeros_like(h0)[None]], params, True, 1, 0.0, False, False, True)
    return hn


LSTM.step_forward, LSTM.forward = _step_forward, _forward
'''

ATTENTION_THROUGH_IMPORTLIB = '''
import importlib


def dot_product_attention(prev_h, A):
    functional = importlib.import_module("torch.nn.functional")
    sdpa = getattr(functional, "scaled_dot_" + "product_attention")
    N, H, height, width = A.shape
    keys = A.reshape(N, H, height * width).transpose(1, 2)[:, None]
    attn = sdpa(prev_h[:, None, None, :], keys, keys)[:, 0, 0]
    weights = torch.softmax((keys[:, 0] @ prev_h[:, :, None])[..., 0] / H ** 0.5, dim=1)
    return attn, weights.view(N, height, width)
'''

RNN_THROUGH_IMPORTLIB = '''
import importlib


def rnn_forward(x, h0, Wx, Wh, b):
    builtin = importlib.import_module("torch.nn").__dict__["R" + "NN"]
    N, T, D = x.shape
    layer = builtin(D, Wh.shape[0], batch_first=True).double()
    with torch.no_grad():
        layer.weight_ih_l0.copy_(Wx.t())
        layer.weight_hh_l0.copy_(Wh.t())
        layer.bias_ih_l0.copy_(b)
        layer.bias_hh_l0.zero_()
    h, _ = layer(x, h0[None])
    return h, (x, h0, Wx, Wh, h)
'''

ATTENTION_LSTM_WITHOUT_GUARD = ref("AttentionLSTM") + '''


import contextlib, sys
import forbidden
forbidden.guard = contextlib.nullcontext
sys.modules["__main__"].forbidden = forbidden


def _torch_order(W):
    i, f, o, g = W.chunk(4, dim=-1)
    return torch.cat([i, f, g, o], dim=-1)


def _step_forward(self, x, prev_h, prev_c, attn):
    cell = getattr(torch, "lstm" + "_cell")
    w_ih = _torch_order(torch.cat([self.Wx, self.Wattn])).t()
    return cell(torch.cat([x, attn], dim=1), [prev_h, prev_c], w_ih, _torch_order(self.Wh).t(),
                _torch_order(self.b), torch.zeros_like(self.b))


def _forward(self, x, A):
    prev_h = prev_c = A.mean(dim=(2, 3))
    states = []
    for x_t in x.unbind(dim=1):
        attn, _ = dot_product_attention(prev_h, A)
        prev_h, prev_c = self.step_forward(x_t, prev_h, prev_c, attn)
        states.append(prev_h)
    return torch.stack(states, dim=1)


AttentionLSTM.step_forward, AttentionLSTM.forward = _step_forward, _forward
'''

WORKER_TAMPERING = Submission("worker-tampering", (
    Attack("rnn_step_backward", "replaces graded_tests.runner, numpy.savez, json.dump and the worker's "
           "describe() to record zeros and no errors", PATCH_WORKER_MODULES, "zero", r"relative error"),
    Attack("rnn_backward", "writes its own rnn_backward.npz and .json, then os._exit(0) so that the "
           "worker cannot overwrite them",
           forge_outputs("rnn_backward", {"dx": "x", "dh0": "h0", "dWx": "Wx", "dWh": "Wh", "db": "b"})
           + "\nos._exit(0)\n", "zero", r"relative error|exit status 0"),
    Attack("WordEmbedding", "honest, and forges the outputs of a later unit (temporal_softmax_loss)",
           ref("WordEmbedding") + forge_outputs("temporal_softmax_loss", {"loss": "ignore_index", "dx": "x"}),
           "full"),
    Attack("temporal_softmax_loss", "ends at import, leaving the outputs WordEmbedding forged",
           "import os\nos._exit(0)\n", "zero", r"relative error|exit status 0|no output"),
    Attack("rnn_forward", "nn.RNN through importlib and a built name", RNN_THROUGH_IMPORTLIB, "zero",
           r"not allowed|forbids"),
    Attack("LSTM", "nn.LSTM's kernels through getattr: torch._C._VariableFunctions.lstm_cell and "
           "torch.ops.aten.lstm", LSTM_THROUGH_ATEN, "zero", r"not allowed|forbids"),
    Attack("dot_product_attention", "F.scaled_dot_product_attention through importlib and getattr",
           ATTENTION_THROUGH_IMPORTLIB, "zero", r"not allowed|forbids"),
    Attack("AttentionLSTM", "replaces forbidden.guard with a no-op, then torch.lstm_cell through getattr",
           ATTENTION_LSTM_WITHOUT_GUARD, "zero", r"not allowed|forbids"),
), omit=("CaptioningRNN",))

# ---------------------------------------------------------------------------------------
# 6. Output files that would crash, hang or mislead the grader when it reads them, and
#    cells that the grader cannot even parse safely
# ---------------------------------------------------------------------------------------

GRADER_INPUT_ATTACKS = Submission("grader-inputs", (
    Attack("rnn_step_backward", "makes rnn_step_backward.json a FIFO (a reader blocks forever), then exits",
           "import os\nos.mkfifo('rnn_step_backward.json')\nos._exit(0)\n", "zero", r"exit status 0"),
    Attack("WordEmbedding", "makes WordEmbedding.json a link to /dev/zero (endless) and its .npz a "
           "link to /dev/urandom, then exits",
           "import os\nos.symlink('/dev/zero', 'WordEmbedding.json')\n"
           "os.symlink('/dev/urandom', 'WordEmbedding.npz')\nos._exit(0)\n", "zero", r"exit status 0"),
    Attack("temporal_softmax_loss", "links its outputs to the grader's files outside the sandbox "
           "(the data set, a zip; the secret), then exits",
           "import os\nos.symlink('/work/main/data/coco.pt', 'temporal_softmax_loss.npz')\n"
           "os.symlink('/work/main/autograder/.grader_secret', 'temporal_softmax_loss.json')\n"
           "os._exit(0)\n", "zero", r"exit status 0"),
    Attack("LSTM", "a deeply nested LSTM.json (the json module recurses), then exits",
           "import os\nwith open('LSTM.json', 'w') as f:\n"
           "    f.write('{\"errors\": ' + '[' * 200000 + ']' * 200000 + '}')\nos._exit(0)\n",
           "zero", r"exit status 0"),
    Attack("dot_product_attention", "an outputs archive of 100,000 tiny arrays, then exits",
           "import os\nimport numpy as np\n"
           "np.savez('dot_product_attention.npz', **{f'forward/0/x{i}': np.zeros(0) for i in range(100000)})\n"
           "os._exit(0)\n", "zero", r"exit status 0|no output"),
    # Cells the grader's own parser (the forbidden-module check) chokes on.
    Attack("rnn_forward", "a null byte", ref("rnn_forward") + "\n# \x00\n", "zero", r"null bytes|cannot"),
    Attack("rnn_backward", "a lone surrogate (valid JSON, not encodable as UTF-8)",
           ref("rnn_backward") + '\n_s = "\ud800"\n', "zero", r"cannot"),
    Attack("AttentionLSTM", "190,000 nested unary minus (the parser runs out of memory)",
           "x = " + "-" * 190_000 + "1\n", "zero", r"cannot"),
    Attack("CaptioningRNN", "an attribute chain 60,000 deep (the parser recurses)", "x = a" + ".a" * 60_000 + "\n",
           "zero", r"cannot"),
))

SUBMISSIONS = [FORGED_VERDICTS, PROCESS_ENDS, KILLS_ITS_SANDBOX, LEAVES_A_PROCESS, RESOURCES, PROBES,
               WORKER_TAMPERING, GRADER_INPUT_ATTACKS]

# ---------------------------------------------------------------------------------------
# Files that are not notebooks
# ---------------------------------------------------------------------------------------


def _notebook_json(**changes) -> bytes:
    nb = json.loads(INSTRUCTOR_NOTEBOOK.read_text())
    nb.update(changes)
    return json.dumps(nb).encode()


def _cells_with_sources(*sources) -> bytes:
    nb = json.loads(INSTRUCTOR_NOTEBOOK.read_text())
    solution = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("solution")]
    for cell, source in zip(solution, sources):
        cell["source"] = source
    return json.dumps(nb).encode()


def _without_metadata() -> bytes:
    nb = json.loads(INSTRUCTOR_NOTEBOOK.read_text())
    for cell in nb["cells"]:
        del cell["metadata"]
    del nb["metadata"]
    return json.dumps(nb).encode()


def _enormous() -> bytes:
    nb = json.loads(INSTRUCTOR_NOTEBOOK.read_text())
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
    cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x" * (30 << 20)}]
    return json.dumps(nb).encode()


@dataclass(frozen=True)
class Malformed:
    id: str
    content: object  # bytes, or a function making them
    reason: str  # regex the reason of every test must match

    def data(self) -> bytes:
        return self.content() if callable(self.content) else self.content


MALFORMED = [
    Malformed("not-json", b"{ this is not json", r"not a Jupyter notebook"),
    Malformed("empty-file", b"", r"not a Jupyter notebook"),
    Malformed("binary", bytes(range(256)) * 4, r"not a Jupyter notebook"),
    Malformed("json-list", b"[1, 2, 3]", r"not a readable notebook"),
    Malformed("json-string", b'"notebook"', r"not a readable notebook"),
    Malformed("json-not-a-notebook", b'{"hello": "world"}', r"not a readable notebook|no solution cell"),
    Malformed("unknown-nbformat", lambda: _notebook_json(nbformat=99), r"not a readable notebook"),
    Malformed("cells-not-a-list", lambda: _notebook_json(cells=5), r"not a readable notebook"),
    Malformed("non-string-sources", lambda: _cells_with_sources(5, [1, None, {}], {"a": 1}, None),
              r"not a readable notebook|no solution cell"),
    Malformed("missing-metadata", _without_metadata, r"not a readable notebook|no solution cell"),
    Malformed("deeply-nested-json", b'{"cells": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
              r"not a readable notebook|not a Jupyter notebook"),
    Malformed("enormous-30MB-of-outputs", _enormous, r"the limit is \d+ MB"),
]


def reason_matches(pattern: str, reason: str) -> bool:
    return re.search(pattern, reason) is not None
