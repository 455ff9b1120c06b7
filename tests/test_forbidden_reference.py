"""The reference solution works, unchanged, with every forbidden built-in blocked
(block_for_good) and, for the hand-written backward, with autograd refused (refuse_autograd);
and autograd is refused by every route there. Run in a fresh interpreter: neither can be
undone."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

PROBE = f"""
import json, sys
sys.path.insert(0, {str(REPO_ROOT)!r})
""" + r'''
import torch
torch.set_num_threads(1)
import torchvision.models
from autograder import forbidden
from solution import captioning as ref

D, H, N, T = 4, 5, 3, 4
g = torch.Generator().manual_seed(0)
def rand(*shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)
x_step, prev_h, Wx, Wh, b, dnext_h = rand(N, D), rand(N, H), rand(D, H), rand(H, H), rand(H), rand(N, H)
x_seq, h0, dh = rand(N, T, D), rand(N, H), rand(N, T, H)
A = rand(N, H, 4, 4)
vocab = {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3, "a": 4, "b": 5}
images = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8, generator=g)
captions = torch.tensor([[1, 4, 5, 2, 0], [1, 5, 2, 0, 0]])


def gradients(loss, tensors):
    return list(torch.autograd.grad(loss, tensors))


def forward_results():
    """Outputs of the reference's forward passes, and their autograd gradients."""
    out = {}
    out["rnn_step_forward"] = [ref.rnn_step_forward(x_step, prev_h, Wx, Wh, b)[0]]
    out["rnn_forward"] = [ref.rnn_forward(x_seq, h0, Wx, Wh, b)[0]]
    for name, layer_class, second in (("LSTM", ref.LSTM, h0), ("AttentionLSTM", ref.AttentionLSTM, A)):
        torch.manual_seed(1)
        layer = layer_class(D, H).double()
        hn = layer(x_seq, second)
        dout = torch.randn(hn.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        out[name] = [hn, *gradients((hn * dout).sum(), list(layer.parameters()))]
    leaves = [prev_h.clone().requires_grad_(), A.clone().requires_grad_()]
    attn, weights = ref.dot_product_attention(*leaves)
    out["dot_product_attention"] = [attn, weights, *gradients(attn.sum() + (weights * weights).sum(), leaves)]
    for cell_type in ("rnn", "lstm", "attn"):
        torch.manual_seed(2)
        model = ref.CaptioningRNN(vocab, hidden_dim=8, wordvec_dim=6, cell_type=cell_type,
                                  image_encoder_pretrained=False, ignore_index=0).double()
        loss = model(images, captions)
        trained = [p for p in model.parameters() if p.requires_grad]
        sampled = model.sample(images, max_length=4)
        sampled = list(sampled) if isinstance(sampled, tuple) else [sampled]
        out[f"CaptioningRNN/{cell_type}"] = [loss, *gradients(loss, trained), *sampled]
    return out


def backward_results():
    """The reference's hand-written backward passes (tensor arithmetic only)."""
    _, cache = ref.rnn_step_forward(x_step, prev_h, Wx, Wh, b)
    step = ref.rnn_step_backward(dnext_h, cache)
    _, cache = ref.rnn_forward(x_seq, h0, Wx, Wh, b)
    return {"rnn_step_backward": list(step), "rnn_backward": list(ref.rnn_backward(dh, cache))}


def run_backward(engine):
    leaf = x_step.clone().requires_grad_()
    y = torch.tanh(leaf).sum()
    return engine.run_backward((y,), (torch.ones_like(y),), False, False, (leaf,), False, accumulate_grad=False)


def engine_directly():
    return run_backward(torch.autograd.variable.Variable._execution_engine)


def grad_fn_by_hand():
    with torch.enable_grad():
        y = torch.tanh(x_step.clone().requires_grad_())
        return y.grad_fn(torch.ones_like(y))


def forward_mode():
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level():
        return fwAD.unpack_dual(torch.tanh(fwAD.make_dual(x_step, torch.ones_like(x_step)))).tangent


def make_dual_op():  # the operator alone (entering the level through torch._C, not forward_ad)
    level = torch._C._enter_dual_level()
    try:
        return torch._make_dual(x_step, torch.ones_like(x_step), level)
    finally:
        torch._C._exit_dual_level(level=level)


f = lambda t: torch.tanh(t).sum()
AUTOGRAD_ROUTES = {
    "Tensor.backward": lambda: f(x_step.clone().requires_grad_()).backward(),
    "torch.autograd.grad": lambda: torch.autograd.grad(f(x_step.clone().requires_grad_()), []),
    "torch.autograd.backward": lambda: torch.autograd.backward(f(x_step.clone().requires_grad_())),
    "torch.autograd.functional.jacobian": lambda: torch.autograd.functional.jacobian(torch.tanh, x_step),
    "torch.autograd.functional.vjp": lambda: torch.autograd.functional.vjp(f, x_step),
    "torch.func.grad": lambda: torch.func.grad(f)(x_step),
    "torch.func.vjp": lambda: torch.func.vjp(f, x_step)[1](torch.ones((), dtype=torch.float64)),
    "torch.func.jacrev": lambda: torch.func.jacrev(torch.tanh)(x_step),
    "torch.func.jacfwd": lambda: torch.func.jacfwd(torch.tanh)(x_step),
    "the engine": engine_directly,
    "a new engine": lambda: run_backward(torch._C._ImperativeEngine()),
    "grad_fn called by hand": grad_fn_by_hand,
    "forward-mode AD": forward_mode,
    "aten::_make_dual": make_dual_op,
}
AUTOGRAD_ROUTES["torch.autograd.grad"] = lambda: torch.autograd.grad(
    f(leaf := x_step.clone().requires_grad_()), [leaf])


def outcome(route):
    try:
        route()
        return "ran"
    except forbidden.ForbiddenModuleError as exc:
        return "refused: " + str(exc)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:200]


def same(before, after):
    return {name: len(before[name]) == len(after[name]) and all(
        torch.equal(p, q) for p, q in zip(before[name], after[name])) for name in before}


unblocked_forward, unblocked_backward = forward_results(), backward_results()
unrefused = {name: outcome(route) for name, route in AUTOGRAD_ROUTES.items()}
forbidden.block_for_good()
blocked_forward = forward_results()
after_block = forbidden.violations()
forbidden.refuse_autograd("rnn_step_backward")
refused_backward = backward_results()
after_backward = forbidden.violations()
refused = {}
for name, route in AUTOGRAD_ROUTES.items():
    count = len(forbidden._VIOLATIONS)
    refused[name] = [outcome(route), len(forbidden._VIOLATIONS) > count]
print(json.dumps({
    "forward_same": same(unblocked_forward, blocked_forward),
    "backward_same": same(unblocked_backward, refused_backward),
    "backward_dtypes": sorted({str(t.dtype) for ts in refused_backward.values() for t in ts}),
    "violations_after_block": after_block, "violations_after_backward": after_backward,
    "unrefused": unrefused, "refused": refused, "violations": forbidden.violations(),
}))
'''


@pytest.fixture(scope="module")
def probe():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_reference_forward_passes_are_unchanged_with_builtins_blocked(probe):
    # rnn, LSTM, attention, AttentionLSTM, and the captioner of each cell type: outputs,
    # autograd gradients and sampled captions bit for bit equal to an unblocked run.
    assert probe["forward_same"] == {name: True for name in probe["forward_same"]}
    assert set(probe["forward_same"]) == {"rnn_step_forward", "rnn_forward", "LSTM", "AttentionLSTM",
                                          "dot_product_attention", "CaptioningRNN/rnn", "CaptioningRNN/lstm",
                                          "CaptioningRNN/attn"}
    assert probe["violations_after_block"] == []


def test_reference_hand_written_backward_works_with_autograd_refused(probe):
    assert probe["backward_same"] == {"rnn_step_backward": True, "rnn_backward": True}
    assert probe["backward_dtypes"] == ["torch.float64"]
    assert probe["violations_after_backward"] == []


def test_every_autograd_route_computes_unless_refused(probe):
    # Unrefused, each route computes a gradient: the refusal, not the test, stops them.
    assert probe["unrefused"] == {name: "ran" for name in probe["unrefused"]}


def test_every_autograd_route_is_refused_and_recorded(probe):
    for name, (result, recorded) in probe["refused"].items():
        assert result.startswith("refused: rnn_step_backward must be written by hand: autograd is not "
                                 "available here"), (name, result)
        assert recorded, name
    for expected in ("torch.Tensor.backward", "torch.autograd.grad", "torch.func.grad", "the autograd engine",
                     "torch.enable_grad"):
        assert expected in probe["violations"], expected
