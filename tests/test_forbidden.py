"""What is forbidden: the operators taken from torch's registry, and the static check of a
notebook's cells (find_forbidden_in_cells). The runtime block is tested in
test_forbidden_runtime.py and test_forbidden_reference.py (fresh interpreters)."""

import importlib
import re
import sys
from pathlib import Path

import pytest
import torch

from autograder import forbidden
from autograder.forbidden import find_forbidden, find_forbidden_in_cells, forbidden_aten_ops
from solution import source as reference

SOLUTION_DIR = Path(__file__).resolve().parent.parent / "solution"
PREAMBLE = reference.split_definitions()[0]  # import math, os, torch, F, nn: every unit runs with it


# ---------------------------------------------------------------------------------------
# The operators
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ops(registry):
    return set(forbidden_aten_ops())


@pytest.fixture(scope="module")
def registry():
    import torchvision.models  # noqa: F401  (what the worker imports: its operators too)
    # Left to the block's import hook in the worker (forbidden._EXTRA_IMPORTS), but its
    # operators must be found like the others when it is imported.
    importlib.import_module("torch.nn.attention.varlen")
    forbidden_aten_ops()  # imports what defines further operators (torch.onnx.ops, ...)
    return {name.split(".")[0] for name in torch._C._dispatch_get_all_op_names()}


@pytest.mark.parametrize("name", [
    # What a tester used to get full marks, and the other entry points of the same kind.
    "aten::_scaled_dot_product_attention_math", "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_flash_attention",
    "aten::_scaled_dot_product_cudnn_attention", "aten::_native_multi_head_attention",
    "aten::scaled_dot_product_attention", "aten::_transformer_encoder_layer_fwd",
    "aten::mkldnn_rnn_layer", "aten::_cudnn_rnn", "aten::miopen_rnn", "aten::lstm", "aten::gru",
    "aten::rnn_tanh", "aten::rnn_relu", "aten::lstm_cell", "aten::gru_cell", "aten::rnn_tanh_cell",
    "aten::rnn_relu_cell", "aten::_thnn_fused_lstm_cell", "aten::_thnn_fused_gru_cell",
    "aten::quantized_lstm_cell", "quantized::quantized_lstm_cell_dynamic", "aten::_flash_attention_forward",
    "aten::_efficient_attention_forward", "torch_attn::_varlen_attn", "torch_attn::_varlen_attn_backward",
])
def test_known_entry_points_are_forbidden(ops, name):
    assert name in ops


# A broader pattern than forbidden.py's words, written here independently: any operator it
# matches must be forbidden or excluded on purpose. A newer torch that adds, say,
# "aten::_flash_decoding_attn" or "aten::fused_recurrent_step" fails here until someone decides.
BROADER = re.compile(r"rnn|lstm|gru|recurr|(?<!fl)atten|attn|mha|multi_?head|heads?_|qkv|transformer|sdp"
                     r"|flash|efficient_att|cell", re.I)


def test_every_operator_named_like_a_recurrent_or_attention_kernel_is_forbidden_or_excluded(ops, registry):
    suspects = {name for name in registry if BROADER.search(name.split("::", 1)[1])}
    assert len(suspects) > 60  # the pattern does find them
    unaccounted = suspects - ops - set(forbidden.EXCLUDED_OPS)
    assert unaccounted == set(), f"decide for each: forbid it, or add it to EXCLUDED_OPS with why: {unaccounted}"


def test_exclusions_are_few_current_and_really_excluded(ops, registry):
    assert len(forbidden.EXCLUDED_OPS) <= 3
    for name, why in forbidden.EXCLUDED_OPS.items():
        assert name in registry and name not in ops and why, name  # a stale entry would hide nothing


def test_forbidden_operators_exist_and_all_look_recurrent_or_attention(ops, registry):
    assert ops <= registry
    assert all(BROADER.search(name.split("::", 1)[1]) for name in ops)


def test_nothing_a_correct_student_needs_is_forbidden(ops):
    needed = {f"aten::{name}" for name in (
        "softmax", "_softmax", "log_softmax", "_log_softmax", "tanh", "sigmoid", "mm", "bmm", "addmm",
        "matmul", "linear", "einsum", "embedding", "cross_entropy_loss", "nll_loss", "nll_loss_nd",
        "split", "split_with_sizes", "chunk", "stack", "unbind", "cat", "index", "index_select", "gather",
        "sum", "mean", "reshape", "view", "t", "transpose", "permute", "squeeze", "unsqueeze", "zeros_like",
        "empty_like", "masked_fill", "where", "flatten", "unflatten", "conv2d", "batch_norm", "relu",
        "adaptive_avg_pool2d", "argmax", "_masked_softmax", "_safe_softmax")}
    assert needed & ops == set()


# ---------------------------------------------------------------------------------------
# The static check
# ---------------------------------------------------------------------------------------


def findings(code: str, unit: str = "LSTM") -> list[str]:
    return find_forbidden_in_cells({unit: code}, PREAMBLE)[unit]


def test_reference_has_no_finding():
    # Each file of solution/, read alone, and the graded units as the grader reads them.
    files = sorted(SOLUTION_DIR.rglob("*.py"))
    assert files
    assert [f for path in files for f in find_forbidden(path.read_text(), str(path))] == []
    cells = {unit: reference.unit_source(unit) for unit in reference.graded_units()}
    assert find_forbidden_in_cells(cells, PREAMBLE) == {unit: [] for unit in cells}


def test_correct_variants_have_no_finding():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from catalogue.correct import VARIANTS
    cells = {unit: reference.unit_source(unit) for unit in reference.graded_units()}
    for variant in VARIANTS:
        result = find_forbidden_in_cells({**cells, **variant.cells}, PREAMBLE)
        assert result == {unit: [] for unit in result}, variant.id


@pytest.mark.parametrize("code, what", [
    # Through the preamble's imports (torch, nn, F), as a unit really runs.
    ("layer = nn.LSTMCell(3, 4)", "torch.nn.LSTMCell"),
    ("out = F.scaled_dot_product_attention(q, k, v)", "torch.nn.functional.scaled_dot_product_attention"),
    ("layer = torch.nn.LSTM(3, 4)", "torch.nn.LSTM"),
    ("h = torch.lstm_cell(x, hx, w1, w2)", "torch.lstm_cell"),
    ("h = torch.ops.aten._scaled_dot_product_attention_math(q, k, v)", "torch.ops"),
    ("m = torch.ao.nn.quantizable.LSTM(3, 4)", "torch.ao"),
    ("h = torch._VF.lstm(x, hx, params)", "torch._VF"),
    ("f = torch._C._VariableFunctions", "torch._C"),
    # Its own imports, in any form.
    ("import torch.nn as tnn\ntnn.RNN(2, 2)", "torch.nn.RNN"),
    ("from torch.nn import LSTM as Mine\nMine(2, 2)", "torch.nn.LSTM"),
    ("from torch.nn import MultiheadAttention", "torch.nn.MultiheadAttention"),
    ("from torch.nn.modules import rnn", "torch.nn.modules.rnn"),
    ("import torch.nn.modules.rnn", "torch.nn.modules.rnn"),
    ("from torch.nn import *\nlayer = GRUCell(2, 2)", "torch.nn.GRUCell"),
    ("from torchvision.models.swin_transformer import shifted_window_attention",
     "torchvision.models.swin_transformer"),
    ("from torch.nn.attention.flex_attention import flex_attention", "torch.nn.attention"),
    # getattr with a constant name, __dict__ / vars lookups, aliases by assignment.
    ("f = getattr(torch.nn, 'LSTMCell')", "torch.nn.LSTMCell"),
    ("f = getattr(getattr(torch, 'nn'), 'GRU')", "torch.nn.GRU"),
    ("f = vars(nn)['LSTM']", "torch.nn.LSTM"),
    ("f = nn.__dict__['LSTM']", "torch.nn.LSTM"),
    ("L = nn.LSTM\nlayer = L(3, 4)", "torch.nn.LSTM"),
    ("m = torch.nn\nlayer = m.GRU(3, 4)", "torch.nn.GRU"),
    ("a, b = nn, F\nlayer = a.RNNCell(3, 4)", "torch.nn.RNNCell"),
    ("def f(torch=torch):\n    return torch.nn.LSTM(3, 4)", "torch.nn.LSTM"),
    ("class Mine(nn.LSTM):\n    pass", "torch.nn.LSTM"),
])
def test_uses_are_found(code, what):
    found = findings(code)
    assert any(what in f and "not allowed" in f for f in found), found


@pytest.mark.parametrize("code, what", [
    ("import importlib\nm = importlib.import_module('torch.nn')", "importlib"),
    ("import gc\nobjs = gc.get_objects()", "gc"),
    ("import ctypes", "ctypes"),
    ("import sys\nm = sys.modules['forbidden']", "sys.modules"),
    ("import forbidden", "forbidden"),
    ("import subprocess", "subprocess"),
    ("os.system('python -c 1')", "os.system"),
    ("m = __import__('torch')", "__import__"),
    ("exec('x = 1')", "exec"),
    ("code = compile('x', 'f', 'eval')", "compile"),
    ("g = nn.LSTM.__init__.__globals__", "__globals__"),
    ("torch.nn.functional.softmax = my_softmax", "changing torch.nn.functional.softmax"),
    ("setattr(torch, 'tanh', my_tanh)", "setattr on torch"),
    ("f = getattr(nn, 'LST' + 'M')", "getattr on torch.nn with a computed name"),
    ("import torch.library", "torch.library"),
    ("from torch import func", "torch.func"),
    ("import functorch", "functorch"),
])
def test_what_only_dismantles_the_block_is_found(code, what):
    found = findings(code)
    assert any(what in f and "not allowed" in f for f in found), found


def test_findings_give_the_line_and_read_well():
    assert findings("x = 1\n\nlayer = nn.LSTMCell(3, 4)\n") == [
        "line 3: torch.nn.LSTMCell is not allowed in this assignment (write your own)"]


@pytest.mark.parametrize("code", [
    # Mentions are not uses: docstrings, strings, comments (issue finding 3).
    'def lstm_gates(a, prev_c):\n    """Gates i, f, o, g (torch.nn.LSTMCell uses i, f, g, o; not used here)."""\n'
    '    return a, prev_c\n',
    'def dot_product_attention(prev_h, A):\n    """Attention by hand: no F.scaled_dot_product_attention."""\n'
    '    return torch.softmax(prev_h, dim=1)  # not nn.MultiheadAttention either\n',
    "message = 'do not use nn.LSTM or torch._VF or importlib'\n",
    "raise ValueError('torch.nn.GRUCell is forbidden')\n",
    "key = 'LSTM'\nlayers = {'LSTM': 1}\n",
    # One's own classes and functions with the same names as torch's.
    "class LSTM(nn.Module):\n    pass\nlayer = LSTM()\ncell = RNN(3, 4)\n",
    "def scaled_dot_product_attention(q, k, v):\n    return q\nout = scaled_dot_product_attention(1, 2, 3)\n",
    # What a correct solution uses.
    "x = torch.tanh(a) + torch.sigmoid(b) + F.softmax(c, dim=1) + F.cross_entropy(d, e)\n"
    "w = nn.Parameter(torch.randn(3, 4))\nlinear = nn.Linear(3, 4)\nfrom torch.nn.utils.rnn import pad_sequence\n"
    "hasattr(nn, 'LSTM')\nif torch.cuda.is_available():\n    torch.backends.cudnn.allow_tf32 = False\n",
    "self.rnn = RNN(3, 4)\nself.lstm_cell = 1\nout = self.rnn.forward(x)\n",
])
def test_mentions_and_own_names_are_not_findings(code):
    assert findings(code) == []


def test_names_resolve_through_other_cells():
    # Another cell's imports and aliases count (issue finding 2); a cell's own class shadows them.
    cells = {
        "rnn_forward": "import torch.nn as tnn\nL = nn.LSTM\n",
        "LSTM": "cell = tnn.LSTMCell(3, 4)\nlayer = L(3, 4)\n",
        "AttentionLSTM": "class L(nn.Module):\n    pass\nlayer = L()\nx = tnn.Linear(2, 2)\n",
    }
    result = find_forbidden_in_cells(cells, PREAMBLE)
    assert result["rnn_forward"] == ["line 2: torch.nn.LSTM is not allowed in this assignment (write your own)"]
    assert result["LSTM"] == ["line 1: torch.nn.LSTMCell is not allowed in this assignment (write your own)",
                              "line 2: torch.nn.LSTM is not allowed in this assignment (write your own)"]
    assert result["AttentionLSTM"] == []


def test_without_the_preamble_a_unit_cell_alone_misses_nn():
    # Why the preamble is passed: `nn` comes from it (read alone, nn.LSTMCell resolves to nothing).
    assert find_forbidden_in_cells({"LSTM": "nn.LSTMCell(3, 4)"})["LSTM"] == []
    assert findings("nn.LSTMCell(3, 4)") != []


def test_autograd_in_hand_written_backward_units_and_their_forward_cells():
    cells = {
        "rnn_step_forward": "def rnn_step_forward(x, prev_h, Wx, Wh, b):\n    x = x.requires_grad_()\n"
                            "    return x, (x,)\n",
        "rnn_step_backward": "def rnn_step_backward(dnext_h, cache):\n    cache[0].backward(dnext_h)\n"
                             "    return torch.autograd.grad(cache[0], [cache[0]])\n",
        "rnn_forward": "def rnn_forward(x, h0, Wx, Wh, b):\n    return x, None\n",
        "rnn_backward": "def rnn_backward(dh, cache):\n    \"\"\"No .backward() here: by hand.\"\"\"\n"
                        "    return dh * 2\n",
        "LSTM": "def f(x):\n    x.requires_grad_()\n    return torch.autograd.grad(x.sum(), x)\n",
    }
    result = find_forbidden_in_cells(cells, PREAMBLE)
    assert result["rnn_step_forward"] == []  # its own unit does not forbid autograd
    assert result["LSTM"] == []  # nor does any other unit
    assert result["rnn_forward"] == []
    step = result["rnn_step_backward"]
    assert any(f.startswith("line 2: .backward is not allowed here") for f in step), step
    assert any(f.startswith("line 3: torch.autograd is not allowed here") for f in step), step
    assert any(f.startswith("in your rnn_step_forward cell, line 2: .requires_grad_ is not allowed") for f in step)
    # rnn_backward runs the step functions too (helpers), and its docstring mention costs nothing.
    assert all(f.startswith("in your rnn_step_") for f in result["rnn_backward"]), result["rnn_backward"]
    assert result["rnn_backward"] != []


@pytest.mark.parametrize("code", [
    "def broken(:\n",
    "x = 1\x00\n",
    "x = '\udc80'\n",  # a lone surrogate
    "x = " + "(" * 200 + "1" + ")" * 200 + "\n",
    "x = " + "-" * 100_000 + "1\n",
    "x = [" * 5000 + "]" * 5000 + "\n",
    "y = a" + ".b" * 100_000 + "\n",
    "getattr(nn, '\udc80LSTM')\n",
], ids=["syntax-error", "null-byte", "lone-surrogate", "nested-parentheses", "nested-unary", "nested-lists",
        "long-attribute-chain", "surrogate-in-getattr"])
def test_odd_input_is_a_finding_never_a_crash(code):
    result = findings(code)
    assert isinstance(result, list)
    for finding in result:
        finding.encode("utf-8")  # printable as is: no lone surrogate reaches the feedback
        assert len(finding) < 400


def test_a_cell_that_cannot_be_parsed_says_so():
    [finding] = findings("def broken(:\n")
    assert finding.startswith("your cell cannot be parsed (line 1: ")


def test_find_forbidden_reads_one_source_alone():
    assert find_forbidden("import torch\nlayer = torch.nn.LSTM(3, 4)\n") == [
        "line 2: torch.nn.LSTM is not allowed in this assignment (write your own)"]


def test_a_thread_module_in_a_cell_run_by_a_backward_pass_is_that_cells_own_finding():
    """Issue 22 item 2: a thread in rnn_step_forward was charged to both backward passes, as
    autograd; it is rnn_step_forward's, in words about threads, and no other unit's."""
    uses = {"threading": "import threading\nthreading.Thread(target=print).start()\n",
            "_thread": "import _thread\n_thread.start_new_thread(print, ())\n",
            "concurrent": "from concurrent.futures import ThreadPoolExecutor\nThreadPoolExecutor(1)\n"}
    for route, code in uses.items():
        for cell in ("rnn_step_forward", "rnn_step_backward", "rnn_forward", "rnn_backward"):
            cells = {u: "x = 1\n" for u in reference.graded_units()} | {cell: code}
            result = find_forbidden_in_cells(cells, PREAMBLE)
            assert {u for u, found in result.items() if found} == {cell}, (route, cell, result)
            assert result[cell] and all(f"threads are not allowed in {cell} ({route})" in f for f in result[cell])
            assert not any("without autograd" in f for f in result[cell]), result[cell]
        # Other units do not run inside a hand-written backward pass: no rule on threads there.
        assert find_forbidden_in_cells({"LSTM": code}, PREAMBLE)["LSTM"] == []


def test_the_threadless_cells_are_those_whose_code_runs_with_a_backward_pass():
    # forbidden.py is copied into the sandbox alone: its table must agree with the grader's.
    from autograder.submission_sandbox import STUDENT_COLLABORATORS
    assert {u: set(cells) for u, cells in forbidden.HAND_WRITTEN_BACKWARD.items()} == \
        {u: {*STUDENT_COLLABORATORS[u], u} for u in forbidden.HAND_WRITTEN_BACKWARD}
    assert set(forbidden.THREADLESS_CELLS) == {"rnn_step_forward", "rnn_step_backward", "rnn_forward",
                                               "rnn_backward"}


@pytest.mark.parametrize("module", ["_imp", "_frozen_importlib", "_frozen_importlib_external", "pkgutil",
                                    "zipimport"])
def test_the_routes_to_a_fresh_copy_of_a_module_are_findings(module):
    # Each can build a new _thread, whose thread starters refuse_threads never saw.
    assert findings(f"import {module}\n") == [f"line 1: {module} is not allowed in graded code: it loads or "
                                               "reloads modules behind the grader's back"]
