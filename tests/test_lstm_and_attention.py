"""LSTM against torch.nn.LSTM (tests may use it; solution/ may not), attention against
worked cases and a per-cell loop, and every gradient against centred numeric ones."""

import math

import pytest
import torch

from numeric import numeric_gradient, rel_error
from solution.captioning import LSTM, AttentionLSTM, dot_product_attention

from conftest import devices


def torch_lstm_with_weights_of(layer: LSTM) -> torch.nn.LSTM:
    """A torch.nn.LSTM holding `layer`'s weights; PyTorch orders gates i, f, g, o."""
    D, four_h = layer.Wx.shape
    H = four_h // 4
    i, f, o, g = (slice(k * H, (k + 1) * H) for k in range(4))
    def reorder(w):
        return torch.cat([w[..., i], w[..., f], w[..., g], w[..., o]], dim=-1)
    reference = torch.nn.LSTM(D, H, batch_first=True).double()
    with torch.no_grad():
        reference.weight_ih_l0.copy_(reorder(layer.Wx).t())
        reference.weight_hh_l0.copy_(reorder(layer.Wh).t())
        reference.bias_ih_l0.copy_(reorder(layer.b))
        reference.bias_hh_l0.zero_()
    return reference


def random_lstm(cls, D, H, seed=0):
    torch.manual_seed(seed)
    layer = cls(D, H).double()
    with torch.no_grad():
        layer.b.normal_()  # a zero bias would hide a bias that is dropped or misplaced
    return layer


@pytest.mark.parametrize("N, T, D, H", [(3, 5, 4, 6), (1, 1, 2, 3)])
def test_lstm_forward_matches_torch_nn_lstm(N, T, D, H):
    layer = random_lstm(LSTM, D, H)
    x, h0 = torch.randn(N, T, D, dtype=torch.float64), torch.randn(N, H, dtype=torch.float64)
    expected, _ = torch_lstm_with_weights_of(layer)(x, (h0[None], torch.zeros_like(h0)[None]))
    hn = layer(x, h0)
    assert hn.shape == (N, T, H)
    assert rel_error(hn, expected) < 1e-13


def test_lstm_step_matches_gate_equations():
    N, D, H = 2, 3, 4
    layer = random_lstm(LSTM, D, H)
    x, h, c = (torch.randn(N, k, dtype=torch.float64) for k in (D, H, H))
    a = x @ layer.Wx + h @ layer.Wh + layer.b
    i, f, o, g = a.split(H, dim=1)
    expected_c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    expected_h = torch.sigmoid(o) * torch.tanh(expected_c)
    next_h, next_c = layer.step_forward(x, h, c)
    assert rel_error(next_h, expected_h) < 1e-14 and rel_error(next_c, expected_c) < 1e-14


def test_lstm_gradients_match_numeric():
    N, T, D, H = 2, 3, 4, 3
    layer = random_lstm(LSTM, D, H)
    x, h0 = torch.randn(N, T, D, dtype=torch.float64), torch.randn(N, H, dtype=torch.float64)
    dout = torch.randn(N, T, H, dtype=torch.float64)
    x_leaf, h0_leaf = x.clone().requires_grad_(True), h0.clone().requires_grad_(True)
    (layer(x_leaf, h0_leaf) * dout).sum().backward()

    def f():
        with torch.no_grad():
            return layer(x, h0)

    for name, value, analytic in [("x", x, x_leaf.grad), ("h0", h0, h0_leaf.grad),
                                  *((n, p.data, p.grad) for n, p in layer.named_parameters())]:
        assert rel_error(analytic, numeric_gradient(f, value, dout)) < 1e-7, name


# --- attention --------------------------------------------------------------------------


def naive_attention(prev_h, A):
    """Per-sample, per-cell attention in Python floats."""
    N, H, height, width = A.shape
    attn = torch.zeros(N, H, dtype=torch.float64)
    weights = torch.zeros(N, height, width, dtype=torch.float64)
    for n in range(N):
        scores = {(r, c): float(prev_h[n] @ A[n, :, r, c]) / math.sqrt(H)
                  for r in range(height) for c in range(width)}
        total = sum(math.exp(s) for s in scores.values())
        for (r, c), s in scores.items():
            weights[n, r, c] = math.exp(s) / total
            attn[n] += weights[n, r, c] * A[n, :, r, c]
    return attn, weights


def test_attention_with_a_zero_query_averages_the_grid():
    A = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    attn, weights = dot_product_attention(torch.zeros(2, 5, dtype=torch.float64), A)
    assert torch.allclose(weights, torch.full((2, 4, 4), 1 / 16, dtype=torch.float64), atol=0, rtol=1e-15)
    assert rel_error(attn, A.mean(dim=(2, 3))) < 1e-15


def test_attention_scales_by_sqrt_h_worked_by_hand():
    # H = 4, so scores are (prev_h . A_cell) / 2. Only cell (0, 0) has a non-zero
    # vector, e1 * 2 log 3, with query e1: its score is log 3, every other cell's is 0.
    H = 4
    A = torch.zeros(1, H, 4, 4, dtype=torch.float64)
    A[0, 0, 0, 0] = 2 * math.log(3)
    prev_h = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64)
    attn, weights = dot_product_attention(prev_h, A)
    # softmax: 3 / (3 + 15) at (0, 0), 1 / 18 elsewhere
    assert weights[0, 0, 0].item() == pytest.approx(3 / 18, rel=1e-14)
    assert weights[0, 3, 3].item() == pytest.approx(1 / 18, rel=1e-14)
    assert attn[0, 0].item() == pytest.approx(3 / 18 * 2 * math.log(3), rel=1e-14)


@pytest.mark.parametrize("N, H", [(3, 6), (1, 1)])
def test_attention_matches_a_per_cell_loop(N, H):
    prev_h, A = torch.randn(N, H, dtype=torch.float64), torch.randn(N, H, 4, 4, dtype=torch.float64)
    attn, weights = dot_product_attention(prev_h, A)
    expected_attn, expected_weights = naive_attention(prev_h, A)
    assert attn.shape == (N, H) and weights.shape == (N, 4, 4)
    assert rel_error(attn, expected_attn) < 1e-13 and rel_error(weights, expected_weights) < 1e-13


def test_attention_gradients_match_numeric():
    N, H = 2, 3
    prev_h, A = torch.randn(N, H, dtype=torch.float64), torch.randn(N, H, 4, 4, dtype=torch.float64)
    d_attn, d_weights = torch.randn(N, H, dtype=torch.float64), torch.randn(N, 4, 4, dtype=torch.float64)
    leaves = [prev_h.clone().requires_grad_(True), A.clone().requires_grad_(True)]
    attn, weights = dot_product_attention(*leaves)
    ((attn * d_attn).sum() + (weights * d_weights).sum()).backward()

    def f():
        out_attn, out_weights = dot_product_attention(prev_h, A)
        return torch.cat([out_attn.flatten(), out_weights.flatten()])

    dout = torch.cat([d_attn.flatten(), d_weights.flatten()])
    for leaf, value in zip(leaves, [prev_h, A]):
        assert rel_error(leaf.grad, numeric_gradient(f, value, dout)) < 1e-7


# --- attention LSTM -----------------------------------------------------------------------


def naive_attention_lstm(layer, x, A):
    """Independent attention LSTM: naive attention and per-gate equations."""
    N, T, _ = x.shape
    H = A.shape[1]
    h = c = A.mean(dim=(2, 3))
    states = []
    for t in range(T):
        attn, _ = naive_attention(h, A)
        a = x[:, t] @ layer.Wx + h @ layer.Wh + attn @ layer.Wattn + layer.b
        i, f, o, g = a.split(H, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        states.append(h)
    return torch.stack(states, dim=1)


@pytest.mark.parametrize("N, T, D, H", [(2, 4, 3, 5), (1, 1, 2, 3)])
def test_attention_lstm_forward_matches_naive(N, T, D, H):
    layer = random_lstm(AttentionLSTM, D, H)
    x, A = torch.randn(N, T, D, dtype=torch.float64), torch.randn(N, H, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        hn = layer(x, A)
        expected = naive_attention_lstm(layer, x, A)
    assert hn.shape == (N, T, H)
    assert rel_error(hn, expected) < 1e-12


def test_attention_lstm_gradients_match_numeric():
    N, T, D, H = 2, 3, 3, 2
    layer = random_lstm(AttentionLSTM, D, H)
    x, A = torch.randn(N, T, D, dtype=torch.float64), torch.randn(N, H, 4, 4, dtype=torch.float64)
    dout = torch.randn(N, T, H, dtype=torch.float64)
    x_leaf, A_leaf = x.clone().requires_grad_(True), A.clone().requires_grad_(True)
    (layer(x_leaf, A_leaf) * dout).sum().backward()

    def f():
        with torch.no_grad():
            return layer(x, A)

    for name, value, analytic in [("x", x, x_leaf.grad), ("A", A, A_leaf.grad),
                                  *((n, p.data, p.grad) for n, p in layer.named_parameters())]:
        assert rel_error(analytic, numeric_gradient(f, value, dout)) < 1e-7, name


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_recurrent_layers_run_on_device_and_dtype(device, dtype):
    N, T, D, H = 2, 3, 4, 5
    x = torch.randn(N, T, D, dtype=torch.float64)
    h0, A = torch.randn(N, H, dtype=torch.float64), torch.randn(N, H, 4, 4, dtype=torch.float64)
    tol = 1e-5 if dtype == torch.float32 else 1e-13
    lstm, attn_lstm = random_lstm(LSTM, D, H), random_lstm(AttentionLSTM, D, H)
    with torch.no_grad():
        expected = lstm(x, h0), attn_lstm(x, A)
        got = (lstm.to(device, dtype)(x.to(device, dtype), h0.to(device, dtype)),
               attn_lstm.to(device, dtype)(x.to(device, dtype), A.to(device, dtype)))
    for out, ref in zip(got, expected):
        assert out.dtype == dtype and out.device.type == device
        assert rel_error(out.cpu(), ref) < tol
