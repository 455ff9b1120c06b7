"""Vanilla RNN: forward against hand-worked and naive computations; the hand-written
backward passes against centred numeric gradients (float64) and against autograd."""

import math

import pytest
import torch

from numeric import autograd_gradients, numeric_gradient, rel_error
from solution.captioning import RNN, rnn_backward, rnn_forward, rnn_step_backward, rnn_step_forward

from conftest import devices


def random_params(D, H, dtype=torch.float64, device="cpu"):
    Wx = torch.randn(D, H, dtype=dtype, device=device) / math.sqrt(D)
    Wh = torch.randn(H, H, dtype=dtype, device=device) / math.sqrt(H)
    b = torch.randn(H, dtype=dtype, device=device)
    return Wx, Wh, b


def test_step_forward_matches_a_hand_worked_case():
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    prev_h = torch.tensor([[0.5]], dtype=torch.float64)
    Wx = torch.tensor([[0.1], [-0.2]], dtype=torch.float64)
    Wh = torch.tensor([[2.0]], dtype=torch.float64)
    b = torch.tensor([0.3], dtype=torch.float64)
    # 1*0.1 + 2*(-0.2) + 0.5*2 + 0.3 = 1.0
    next_h, _ = rnn_step_forward(x, prev_h, Wx, Wh, b)
    assert next_h.shape == (1, 1)
    assert next_h.item() == pytest.approx(math.tanh(1.0), abs=1e-15)


@pytest.mark.parametrize("N, D, H", [(4, 5, 6), (1, 3, 2)])
def test_step_backward_matches_numeric_gradients(N, D, H):
    x, prev_h = torch.randn(N, D, dtype=torch.float64), torch.randn(N, H, dtype=torch.float64)
    Wx, Wh, b = random_params(D, H)
    dnext_h = torch.randn(N, H, dtype=torch.float64)

    _, cache = rnn_step_forward(x, prev_h, Wx, Wh, b)
    grads = rnn_step_backward(dnext_h, cache)

    def f():
        return rnn_step_forward(x, prev_h, Wx, Wh, b)[0]

    for name, value, analytic in zip(["x", "prev_h", "Wx", "Wh", "b"], [x, prev_h, Wx, Wh, b], grads):
        assert analytic.shape == value.shape, name
        assert rel_error(analytic, numeric_gradient(f, value, dnext_h)) < 1e-7, name


def test_step_backward_matches_autograd():
    N, D, H = 3, 10, 7
    inputs = [torch.randn(N, D, dtype=torch.float64), torch.randn(N, H, dtype=torch.float64),
              *random_params(D, H)]
    dnext_h = torch.randn(N, H, dtype=torch.float64)
    _, cache = rnn_step_forward(*inputs)
    grads = rnn_step_backward(dnext_h, cache)
    expected = autograd_gradients(lambda *a: rnn_step_forward(*a)[0], inputs, dnext_h)
    for analytic, reference in zip(grads, expected):
        assert rel_error(analytic, reference) < 1e-12


def naive_rnn(x, h0, Wx, Wh, b):
    """Independent sequence forward: one explicit tanh per sample and timestep."""
    N, T, _ = x.shape
    h = torch.empty(N, T, h0.shape[1], dtype=x.dtype)
    for n in range(N):
        state = h0[n]
        for t in range(T):
            state = torch.tanh(x[n, t] @ Wx + state @ Wh + b)
            h[n, t] = state
    return h


@pytest.mark.parametrize("N, T, D, H", [(2, 3, 4, 5), (1, 1, 3, 2), (3, 1, 2, 4), (1, 4, 2, 3)])
def test_forward_matches_a_naive_loop(N, T, D, H):
    x, h0 = torch.randn(N, T, D, dtype=torch.float64), torch.randn(N, H, dtype=torch.float64)
    params = random_params(D, H)
    h, _ = rnn_forward(x, h0, *params)
    assert h.shape == (N, T, H)
    assert rel_error(h, naive_rnn(x, h0, *params)) < 1e-14


@pytest.mark.parametrize("N, T, D, H", [(2, 3, 4, 5), (1, 1, 3, 2), (1, 4, 2, 3)])
def test_backward_matches_numeric_gradients(N, T, D, H):
    x, h0 = torch.randn(N, T, D, dtype=torch.float64), torch.randn(N, H, dtype=torch.float64)
    Wx, Wh, b = random_params(D, H)
    dh = torch.randn(N, T, H, dtype=torch.float64)

    _, cache = rnn_forward(x, h0, Wx, Wh, b)
    grads = rnn_backward(dh, cache)

    def f():
        return rnn_forward(x, h0, Wx, Wh, b)[0]

    for name, value, analytic in zip(["x", "h0", "Wx", "Wh", "b"], [x, h0, Wx, Wh, b], grads):
        assert analytic.shape == value.shape, name
        assert rel_error(analytic, numeric_gradient(f, value, dh)) < 1e-7, name


def test_backward_matches_autograd_on_a_longer_sequence():
    N, T, D, H = 4, 12, 6, 8
    inputs = [torch.randn(N, T, D, dtype=torch.float64), torch.randn(N, H, dtype=torch.float64),
              *random_params(D, H)]
    dh = torch.randn(N, T, H, dtype=torch.float64)
    _, cache = rnn_forward(*inputs)
    grads = rnn_backward(dh, cache)
    expected = autograd_gradients(lambda *a: rnn_forward(*a)[0], inputs, dh)
    for analytic, reference in zip(grads, expected):
        assert rel_error(analytic, reference) < 1e-12


def test_backward_does_not_use_autograd():
    """The cache holds tensors without history, and the backward works with grad disabled."""
    inputs = [torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64),
              *random_params(4, 5)]
    _, cache = rnn_forward(*inputs)
    with torch.no_grad():
        grads = rnn_backward(torch.randn(2, 3, 5, dtype=torch.float64), cache)
    assert all(g is not None and not g.requires_grad for g in grads)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rnn_module_runs_in_both_dtypes_and_matches_float64(device, dtype):
    torch.manual_seed(1)
    layer = RNN(4, 5)
    x, h0 = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    expected = naive_rnn(x, h0, *(p.detach().double() for p in (layer.Wx, layer.Wh, layer.b)))
    layer = layer.to(device=device, dtype=dtype)
    h = layer(x.to(device, dtype), h0.to(device, dtype))
    assert h.dtype == dtype and h.device.type == device
    assert rel_error(h.cpu(), expected) < (1e-6 if dtype == torch.float32 else 1e-14)
    step = layer.step_forward(x[:, 0].to(device, dtype), h0.to(device, dtype))
    assert rel_error(step.cpu(), expected[:, 0]) < (1e-6 if dtype == torch.float32 else 1e-14)
