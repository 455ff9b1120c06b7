"""The runtime block (forbidden.block_for_good) and the autograd refusal
(forbidden.refuse_autograd), each tried in a fresh interpreter, since neither can be undone.

Every entry point below is first called *unblocked* and must compute a result there (or, for
a GPU-only kernel, fail for want of a kernel): so each test shows that the entry point is
real and that only the block stops it. Weakened blocks (one part left out, in a forked child
of the same interpreter) then show which part stops which route.
"""

import json
import os
import subprocess
import sys

import pytest

from autograder import forbidden
from conftest import REPO_ROOT

# Each attack is a function of no argument computing with a forbidden built-in on small valid
# inputs. GPU_ONLY: no CPU kernel, so unblocked they fail with NotImplementedError.
ATTACKS = r'''
_DEFINED_BEFORE = set(globals())
import torch
import torch.nn.functional as F


def _qkv():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, 1, 3, 4, generator=g) for _ in range(3)]


def _cell_args():
    return torch.randn(1, 3), torch.randn(1, 4), torch.randn(16, 3), torch.randn(16, 4)


def aten_sdpa_math():  # returns the attention weights too
    q, k, v = _qkv(); return torch.ops.aten._scaled_dot_product_attention_math(q, k, v)
def aten_sdpa_flash_for_cpu():
    q, k, v = _qkv(); return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
def aten_sdpa_efficient():
    q, k, v = _qkv(); return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, False)
def aten_native_multi_head_attention():
    E = 4; x = torch.randn(1, 3, E)
    return torch.ops.aten._native_multi_head_attention(x, x, x, E, 1, torch.randn(3 * E, E), torch.randn(3 * E),
                                                       torch.randn(E, E), torch.randn(E))
def aten_mkldnn_rnn_layer():
    x = torch.randn(2, 1, 3); b = torch.zeros(16); h = torch.zeros(1, 4)
    return torch.ops.aten.mkldnn_rnn_layer(x, torch.randn(16, 3), torch.randn(16, 4), b, b, h, h, False, [2], 2, 4,
                                           1, True, False, False, False)
def aten_cudnn_rnn():
    return torch.ops.aten._cudnn_rnn(torch.randn(2, 1, 3), [torch.randn(16, 3)], 4, None, torch.zeros(1, 1, 4), None,
                                     0, 4, 0, 1, False, 0.0, False, False, [], None)
def aten_lstm_cell():
    x, h, wi, wh = _cell_args(); return torch.ops.aten.lstm_cell(x, [h, h], wi, wh)
def aten_lstm():
    h = torch.zeros(1, 1, 4)
    return torch.ops.aten.lstm.input(torch.randn(2, 1, 3), [h, h], [torch.randn(16, 3), torch.randn(16, 4)], False,
                                     1, 0.0, False, False, False)
def torch_lstm_cell():
    x, h, wi, wh = _cell_args(); return torch.lstm_cell(x, [h, h], wi, wh)
def torch_gru_cell():
    return torch.gru_cell(torch.randn(1, 3), torch.randn(1, 4), torch.randn(12, 3), torch.randn(12, 4))
def torch_rnn_tanh_cell():
    return torch.rnn_tanh_cell(torch.randn(1, 3), torch.randn(1, 4), torch.randn(4, 3), torch.randn(4, 4))
def VF_lstm_cell():
    x, h, wi, wh = _cell_args(); return torch._VF.lstm_cell(x, [h, h], wi, wh)
def C_VariableFunctions_lstm_cell():
    x, h, wi, wh = _cell_args(); return torch._C._VariableFunctions.lstm_cell(x, [h, h], wi, wh)
def F_scaled_dot_product_attention():
    q, k, v = _qkv(); return F.scaled_dot_product_attention(q, k, v)
def F_multi_head_attention_forward():  # pure Python on this path (need_weights)
    E = 4; x = torch.randn(3, 1, E)
    return F.multi_head_attention_forward(x, x, x, E, 1, torch.randn(3 * E, E), torch.randn(3 * E), None, None, False,
                                          0.0, torch.randn(E, E), torch.randn(E), training=False, need_weights=True)
def nn_LSTM(): return torch.nn.LSTM(3, 4)(torch.randn(2, 1, 3))
def nn_LSTMCell(): return torch.nn.LSTMCell(3, 4)(torch.randn(1, 3))
def nn_GRU(): return torch.nn.GRU(3, 4)(torch.randn(2, 1, 3))
def nn_GRUCell(): return torch.nn.GRUCell(3, 4)(torch.randn(1, 3))
def nn_RNN(): return torch.nn.RNN(3, 4)(torch.randn(2, 1, 3))
def nn_RNNCell(): return torch.nn.RNNCell(3, 4)(torch.randn(1, 3))
def nn_MultiheadAttention():
    x = torch.randn(3, 1, 4); return torch.nn.MultiheadAttention(4, 1)(x, x, x)
def nn_TransformerEncoderLayer(): return torch.nn.TransformerEncoderLayer(4, 1, 8)(torch.randn(3, 1, 4))
def nn_LSTM_subclass():
    class Mine(torch.nn.LSTM):
        pass
    return Mine(3, 4)(torch.randn(2, 1, 3))
def ao_quantizable_LSTM():  # a pure-Python LSTM
    return torch.ao.nn.quantizable.LSTM(3, 4)(torch.randn(2, 1, 3))
def ao_quantizable_MultiheadAttention():  # a pure-Python attention
    x = torch.randn(3, 1, 4); return torch.ao.nn.quantizable.MultiheadAttention(4, 1)(x, x, x)
def ao_quantizable_LSTMCell_built_without_init():  # only disabling the class's code stops it
    cell = object.__new__(torch.ao.nn.quantizable.LSTMCell)
    cell.__dict__.update(QUANTIZABLE_CELL_STATE)
    return cell(torch.randn(1, 3))
def ao_quantizable_LSTM_made_before_through_functional_call():
    return torch.func.functional_call(PREBUILT_LSTM, dict(PREBUILT_LSTM.named_parameters()), (torch.randn(2, 1, 3),))
def decomposition_lstm_cell():  # torch's own pure-Python LSTM cell
    from torch._decomp import decompositions
    x, h, wi, wh = _cell_args(); return decompositions.lstm_cell(x @ wi.t(), h, h, wh, None, None, 1)
def decomposition_table_sdpa():
    from torch._decomp import decomposition_table
    q, k, v = _qkv()
    return decomposition_table[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default](q, k, v)
def flex_attention():
    from torch.nn.attention.flex_attention import flex_attention as attend
    q, k, v = _qkv(); return attend(q, k, v)
def onnx_attention():
    import torch.onnx.ops
    q, k, v = _qkv(); return torch.onnx.ops.attention(q, k, v)
def torchvision_shifted_window_attention():
    from torchvision.models.swin_transformer import shifted_window_attention
    return shifted_window_attention(torch.randn(1, 2, 2, 4), torch.randn(12, 4), torch.randn(4, 4),
                                    torch.zeros(1, 4, 4), [2, 2], 1, [0, 0])
def vmap_sdpa_math():
    math = torch.ops.aten._scaled_dot_product_attention_math
    return torch.vmap(lambda a: math(a, a, a)[0])(torch.randn(2, 1, 1, 3, 4))


GPU_ONLY = {"aten_sdpa_efficient", "aten_cudnn_rnn"}
QUANTIZABLE_CELL_STATE = dict(vars(torch.ao.nn.quantizable.LSTMCell(3, 4)))
PREBUILT_LSTM = torch.ao.nn.quantizable.LSTM(3, 4)
ATTACK_NAMES = [n for n, f in list(globals().items()) if callable(f) and getattr(f, "__module__", None) == __name__
                and not n.startswith("_") and n not in _DEFINED_BEFORE]
'''

# What a correct student uses: must still work, and record nothing, under the block.
ALLOWED = r'''
def allowed_ops():
    a = torch.randn(2, 3, 4, requires_grad=True)
    w = torch.randn(4, 5)
    out = (torch.softmax(a, 2).sum() + F.log_softmax(a, 2).sum() + torch.tanh(a).sum() + torch.sigmoid(a).sum()
           + a.reshape(6, 4).mm(w).sum() + torch.bmm(a, a.transpose(1, 2)).sum()
           + torch.addmm(torch.zeros(5), a[0], w).sum()
           + torch.stack(a.unbind(1), 1).sum() + sum(t.sum() for t in a.split([1, 3], dim=2))
           + sum(t.sum() for t in a.chunk(2, dim=2)) + torch.cat([a, a], 1).sum() + a[:, [0, 2]].sum()
           + a.index_select(1, torch.tensor([1])).sum() + F.embedding(torch.tensor([[1, 0]]), w).sum()
           + F.cross_entropy(a.reshape(6, 4), torch.tensor([0, 1, 2, 3, 0, 1]), ignore_index=1, reduction="sum")
           + F.linear(a, w.t()).sum() + torch.einsum("nth,hk->ntk", a, w).sum() + (a @ w).sum())
    out.backward()
    return a.grad
'''

PREAMBLE = f"""
import json, os, sys
sys.path.insert(0, {str(REPO_ROOT)!r})
import torch
torch.set_num_threads(1)
"""


def run_python(code: str, timeout: int = 180) -> dict:
    """Run code in a fresh interpreter; it prints one JSON line last."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO_ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# The probe: attacks unblocked in the parent, then one forked child per variant of the block
# (the full block, and blocks with one part left out), each reporting through a pipe.
ENTRY_POINT_PROBE = PREAMBLE + r'''
from autograder import forbidden


def in_child(work):
    """work() in a forked child; its JSON result, or {"error": ...}."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            data = json.dumps(work()).encode()
        except BaseException as exc:
            data = json.dumps({"error": repr(exc)}).encode()
        with os.fdopen(write, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        result = json.loads(f.read() or b'{"error": "no result"}')
    os.waitpid(pid, 0)
    return result


def late_import(without_hooks):
    """torchvision imported only after the block: its attention class and function."""
    if without_hooks:
        forbidden._SweepingFinder.find_spec = lambda self, *args: None
        forbidden._hook_module_init = lambda: None
    forbidden.block_for_good()
    import torchvision.models
    import torchvision.models.swin_transformer as swin
    outcome = {}
    for label, attack in (
            ("class", lambda: swin.ShiftedWindowAttention(4, [2, 2], [0, 0], 1)(torch.randn(1, 2, 2, 4))),
            ("function", lambda: swin.shifted_window_attention(
                torch.randn(1, 2, 2, 4), torch.randn(12, 4), torch.randn(4, 4), torch.zeros(1, 4, 4), [2, 2], 1,
                [0, 0])),
            ("allowed", lambda: torchvision.models.regnet_x_400mf().eval()(torch.randn(1, 3, 64, 64)))):
        try:
            attack()
            outcome[label] = "ran"
        except forbidden.ForbiddenModuleError:
            outcome[label] = "forbidden"
    return outcome


def late_varlen():
    """torch.nn.attention.varlen, which the plan leaves out (importing it means torch._dynamo,
    a second a zygote would pay), imported only after the block."""
    forbidden.block_for_good()
    import torch.nn.attention.varlen as varlen
    q, seq = torch.randn(4, 2, 8), torch.tensor([0, 4], dtype=torch.int32)
    outcome = {}
    for label, attack in (("function", lambda: varlen.varlen_attn(q, q, q, seq, seq, 4, 4)),
                          ("operator", lambda: torch.ops.torch_attn._varlen_attn(q, q, q, seq, seq, 4, 4)),
                          ("overload", lambda: torch.ops.torch_attn._varlen_attn.default(q, q, q, seq, seq, 4, 4))):
        try:
            attack()
            outcome[label] = "ran"
        except forbidden.ForbiddenModuleError:
            outcome[label] = "forbidden"
        except Exception as exc:  # no CPU kernel for flash attention
            outcome[label] = type(exc).__name__
    outcome["violations"] = forbidden.violations()
    return outcome


# A module of torch, imported after the block, that registers an operator named like a
# recurrent cell whose implementation has a harmless name: only the operator block stops it.
LATE_OPERATOR_MODULE = """
import torch


@torch.library.custom_op("kit_late::fused_lstm_cell", mutates_args=())
def _step(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)
"""


def late_operator(without_operator_block):
    import tempfile
    folder = tempfile.mkdtemp()
    with open(os.path.join(folder, "_kit_late_ops.py"), "w") as f:
        f.write(LATE_OPERATOR_MODULE)
    torch.__path__.append(folder)
    if without_operator_block:
        forbidden._block_operators = lambda ops: None
    forbidden.block_for_good()
    __import__("torch._kit_late_ops")
    try:
        torch.ops.kit_late.fused_lstm_cell(torch.randn(3))
        return {"operator": "ran", "violations": forbidden.violations()}
    except forbidden.ForbiddenModuleError:
        return {"operator": "forbidden", "violations": forbidden.violations()}


# As in the worker: a backward pass before forking (autograd's threads, started in a forked
# child, can abort it), and the plan made once before forking.
x = torch.ones(2, requires_grad=True)
(x * 2).sum().backward()
assert "torchvision" not in sys.modules
forbidden.prepare()
late = {"full": in_child(lambda: late_import(False)), "no import hooks": in_child(lambda: late_import(True)),
        "varlen planned": "torch.nn.attention.varlen" in sys.modules, "varlen": in_child(late_varlen),
        "operator": in_child(lambda: late_operator(False)),
        "no operator block": in_child(lambda: late_operator(True))}

import torchvision.models  # the worker imports it before any unit (ImageEncoder needs it)
forbidden._PLAN.clear()  # made again, with torchvision's modules
''' + ATTACKS + ALLOWED + r'''

def outcome(attack):
    try:
        attack()
        return "ran"
    except forbidden.ForbiddenModuleError:
        return "forbidden"
    except Exception as exc:
        return type(exc).__name__


def trial(attack):
    """(outcome plain, under inference mode, with autograd skipped; recorded each time)"""
    results = []
    for context in (None, torch.inference_mode, torch._C._AutoDispatchBelowAutograd):
        before = len(forbidden._VIOLATIONS)
        if context is None:
            result = outcome(attack)
        else:
            with context():
                result = outcome(attack)
        results.append([result, len(forbidden._VIOLATIONS) > before])
    return results


# Nothing else runs here: some attacks (eager flex_attention) leave autograd unusable in
# forked children, so each variant, "unblocked" too, runs in its own child.
forbidden.prepare()


def variant(name):
    if name == "unblocked":
        return {name: outcome(globals()[name]) for name in ATTACK_NAMES}
    if name == "registry keys left out":  # only the alias key CompositeImplicitAutograd
        forbidden._PLAN["registrations"] = [(ns, op, label, ["CompositeImplicitAutograd"])
                                            for ns, op, label, keys in forbidden._PLAN["registrations"]]
    elif name == "pure-Python implementations left out":
        forbidden._PLAN["functions"] = []
    elif name == "classes left out":
        forbidden._PLAN["classes"] = []
        forbidden._hook_module_init = lambda: None
    read, write = os.pipe()
    forbidden.block_for_good(report_fd=write)
    report = {"trials": {name: trial(globals()[name]) for name in ATTACK_NAMES}}
    if name == "full":
        # A student who catches the error is still recorded (the trials ran inside try).
        count = len(forbidden._VIOLATIONS)
        try:
            torch.nn.LSTMCell(3, 4)
        except Exception:
            pass
        report["caught_then_recorded"] = forbidden._VIOLATIONS[count:]
        os.close(write)
        report["reported_lines"] = os.read(read, 1 << 20).decode().splitlines()
        report["violations"] = forbidden.violations()
        report["failures"] = forbidden._BLOCK_FAILURES
        count = len(forbidden._VIOLATIONS)
        allowed_ops()
        report["allowed_recorded"] = forbidden._VIOLATIONS[count:]
    return report


results = {name: in_child(lambda: variant(name)) for name in (
    "unblocked", "full", "registry keys left out", "pure-Python implementations left out", "classes left out")}
print(json.dumps({"unblocked": results.pop("unblocked"), "gpu_only": sorted(GPU_ONLY), "variants": results,
                  "late_import": late}))
'''


@pytest.fixture(scope="module")
def entry_points():
    return run_python(ENTRY_POINT_PROBE)


def test_every_entry_point_computes_unblocked(entry_points):
    # Without the block each attack is real: it computes (or, GPU-only, lacks a CPU kernel).
    for name, result in entry_points["unblocked"].items():
        expected = "NotImplementedError" if name in entry_points["gpu_only"] else "ran"
        assert result == expected, (name, result)
    assert len(entry_points["unblocked"]) == 34


def test_every_entry_point_is_refused_and_recorded_in_every_mode(entry_points):
    full = entry_points["variants"]["full"]
    assert "error" not in full, full
    for name, results in full["trials"].items():
        # plain, inference mode, autograd skipped: refused, and recorded each time
        assert results == [["forbidden", True]] * 3, (name, results)
    assert full["failures"] == []


def test_violations_name_what_was_used(entry_points):
    full = entry_points["variants"]["full"]
    for expected in ("torch.ops.aten._scaled_dot_product_attention_math", "torch.ao.nn.quantizable.LSTM",
                     "torch.ao.nn.quantizable.MultiheadAttention", "torch.nn.functional.scaled_dot_product_attention",
                     "torch.nn.functional.multi_head_attention_forward", "torch.nn.LSTM", "torch._VF.lstm_cell",
                     "torch.ops.aten._native_multi_head_attention", "torch.ops.aten.mkldnn_rnn_layer",
                     "torch.ops.aten._cudnn_rnn", "torch.ops.aten._scaled_dot_product_efficient_attention",
                     "torch.ops.aten._scaled_dot_product_flash_attention_for_cpu"):
        assert expected in full["violations"], expected


def test_a_caught_error_is_still_recorded_and_reported_at_once(entry_points):
    full = entry_points["variants"]["full"]
    assert full["caught_then_recorded"] == ["torch.nn.LSTMCell"]
    # Every attempt was also written to report_fd as it happened, in order.
    assert list(dict.fromkeys(full["reported_lines"])) == full["violations"]


def test_what_a_correct_student_uses_still_works_and_records_nothing(entry_points):
    assert entry_points["variants"]["full"]["allowed_recorded"] == []


def test_each_part_of_the_block_is_needed(entry_points):
    """Leaving one part out lets some routes through (they then compute): the defences are
    not redundant."""
    def escaped(variant):
        trials = entry_points["variants"][variant]["trials"]
        return {name for name, results in trials.items() if any(r[0] == "ran" for r in results)}

    # Kernels only at CompositeImplicitAutograd: ops with their own CPU kernel, and vmap's
    # batching decomposition, are not covered.
    assert {"aten_sdpa_flash_for_cpu", "aten_native_multi_head_attention", "aten_mkldnn_rnn_layer",
            "vmap_sdpa_math"} <= escaped("registry keys left out")
    # Pure-Python implementations reach no forbidden kernel.
    assert {"F_multi_head_attention_forward", "decomposition_lstm_cell",
            "torchvision_shifted_window_attention"} <= escaped("pure-Python implementations left out")
    # A pure-Python class built without __init__, or an instance made before the block.
    assert {"ao_quantizable_LSTMCell_built_without_init", "ao_quantizable_LSTM",
            "ao_quantizable_LSTM_made_before_through_functional_call"} <= escaped("classes left out")


def test_modules_imported_after_the_block_are_blocked_too(entry_points):
    late = entry_points["late_import"]
    assert late["full"] == {"class": "forbidden", "function": "forbidden", "allowed": "ran"}
    # Without nn.Module.__init__'s check and the import hook, the late module is intact.
    assert late["no import hooks"] == {"class": "ran", "function": "ran", "allowed": "ran"}


def test_varlen_imported_after_the_block_is_refused_everywhere(entry_points):
    late = entry_points["late_import"]
    assert late["varlen planned"] is False  # the zygote does not pay for torch._dynamo
    assert {k: late["varlen"][k] for k in ("function", "operator", "overload")} == {
        "function": "forbidden", "operator": "forbidden", "overload": "forbidden"}
    assert late["varlen"]["violations"] == ["torch.nn.attention.varlen.varlen_attn",
                                            "torch.ops.torch_attn._varlen_attn"]


def test_an_operator_registered_by_a_late_import_is_blocked_at_the_dispatcher(entry_points):
    late = entry_points["late_import"]
    assert late["operator"] == {"operator": "forbidden", "violations": ["torch.ops.kit_late.fused_lstm_cell"]}
    # Without the operator block, its implementation's harmless name lets it compute.
    assert late["no operator block"] == {"operator": "ran", "violations": []}


# ---------------------------------------------------------------------------------------
# refuse_threads: every Python route to a new thread (issue 22 item 2)
# ---------------------------------------------------------------------------------------

THREAD_PROBE = PREAMBLE + r'''
import asyncio, concurrent.futures, json, logging.handlers, multiprocessing.pool, os, queue, signal, threading
import _imp, _thread
from autograder import forbidden

seen = []  # grad mode in each thread that ran


def probe():
    seen.append(torch.is_grad_enabled())


def executor():
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(probe).result()


def listener():
    handler = type("H", (), {"handle": lambda self, record: probe(), "level": 0})()
    q = queue.SimpleQueue()
    listening = logging.handlers.QueueListener(q, handler)
    listening.start()
    q.put(logging.makeLogRecord({}))
    listening.stop()


def start_new_thread():
    done = _thread.allocate_lock()
    done.acquire()
    _thread.start_new_thread(lambda: (probe(), done.release()), ())
    done.acquire()


ROUTES = {
    "threading.Thread": lambda: (lambda t: (t.start(), t.join()))(threading.Thread(target=probe)),
    "threading.Timer": lambda: (lambda t: (t.start(), t.join()))(threading.Timer(0, probe)),
    "_thread.start_new_thread": start_new_thread,
    "ThreadPoolExecutor": executor,
    "multiprocessing ThreadPool": lambda: multiprocessing.pool.ThreadPool(1).apply(probe),
    "asyncio.to_thread": lambda: asyncio.run(asyncio.to_thread(probe)),
    "logging QueueListener": listener,
}
# What the rule leaves alone: each runs in the calling thread, or is a copy of it.
def forked():
    pid = os.fork()
    if pid == 0:
        os._exit(0 if not torch.is_grad_enabled() else 3)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def handled():
    signal.signal(signal.SIGUSR1, lambda *_: probe())
    os.kill(os.getpid(), signal.SIGUSR1)


LEFT_ALONE = {"os.fork": forked, "signal handler": handled,
              "torch.jit.fork": lambda: torch.jit.wait(torch.jit.fork(probe))}


def attempt(route):
    before = len(seen)
    try:
        result = route()
        return ["ran", seen[before:], result]
    except forbidden.ForbiddenModuleError as exc:
        return ["refused", seen[before:], str(exc)]


x = torch.ones(2, requires_grad=True)
(x * 2).sum().backward()
forbidden.prepare()
forbidden.block_for_good()
forbidden.refuse_autograd("rnn_step_backward")
autograd_only = {name: attempt(route) for name, route in ROUTES.items()}
forbidden.refuse_threads("rnn_step_backward")
refused = {name: attempt(route) for name, route in {**ROUTES, **LEFT_ALONE}.items()}
# The cell named is the innermost cell on the stack that started the thread.
cell = {}
starting = "def start():\n    threading.Thread(target=probe).start()\n"
exec(compile(starting, "<rnn_step_forward>", "exec"), globals(), cell)
exec(compile("def backward():\n    start()\n", "<rnn_step_backward>", "exec"), {"start": cell["start"]}, cell)
named = attempt(cell["backward"])
fresh = _imp.create_builtin(type("Spec", (), {"name": "_thread"})())
print(json.dumps({"autograd_only": autograd_only, "refused": refused, "named": named,
                  "violations": forbidden.violations(), "threads": threading.active_count(),
                  "fresh_copy_is_unrefused": fresh.start_new_thread is not _thread.start_new_thread}))
'''


@pytest.fixture(scope="module")
def threads():
    return run_python(THREAD_PROBE)


def test_a_thread_has_autograd_on_where_the_main_thread_has_it_refused(threads):
    # The concern is real: with autograd refused, every route starts a thread, grad mode on.
    assert {name: outcome[:2] for name, outcome in threads["autograd_only"].items()} == \
        {name: ["ran", [True]] for name in threads["autograd_only"]}


def test_every_route_to_a_thread_is_refused_and_recorded_in_words_about_threads(threads):
    rule = forbidden.threads_refused("rnn_step_backward")
    for name in threads["autograd_only"]:
        assert threads["refused"][name] == ["refused", [], rule], name
    assert threads["named"] == ["refused", [], forbidden.threads_refused("rnn_step_forward")]
    assert threads["violations"] == [rule, forbidden.threads_refused("rnn_step_forward")]
    assert threads["threads"] == 1  # none started


def test_fork_signal_handlers_and_torch_jit_fork_are_left_alone_they_keep_autograd_off(threads):
    assert threads["refused"]["os.fork"] == ["ran", [], 0]  # the child saw grad mode off
    assert threads["refused"]["signal handler"][:2] == ["ran", [False]]
    assert threads["refused"]["torch.jit.fork"][:2] == ["ran", [False]]


def test_a_fresh_copy_of_thread_escapes_the_refusal_which_is_why_the_screen_forbids_its_routes(threads):
    assert threads["fresh_copy_is_unrefused"]
