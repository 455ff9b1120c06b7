"""The helpers shipped with the notebook: gradient checking, visible checks, decoding."""

import sys

import pytest
import torch

from conftest import REPO_ROOT
from numeric import autograd_gradients

sys.path.insert(0, str(REPO_ROOT / "assignment" / "source" / "rnn_captioning"))
import captioning_helpers as helpers  # noqa: E402


def test_numeric_gradient_matches_autograd():
    torch.manual_seed(0)
    x, w, dout = (torch.randn(3, 4, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64),
                  torch.randn(3, 5, dtype=torch.float64))
    def f(x):
        return torch.tanh(x @ w) ** 2
    (expected,) = autograd_gradients(f, [x], dout)
    numeric = helpers.compute_numeric_gradient(f, x, dout)
    assert (numeric - expected).abs().max() < 1e-8
    assert torch.equal(x, x.clone()), "x must come back unchanged"


def test_numeric_gradient_defaults_to_a_sum():
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    # d/dx sum(x^2) = 2x, worked by hand.
    assert torch.allclose(helpers.compute_numeric_gradient(lambda v: v * v, x), 2 * x, atol=1e-8)


def test_rel_error_worked_by_hand():
    assert helpers.rel_error(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])) == 0
    # max|x - y| = 1, max(|x| + |y|) = 4.
    assert helpers.rel_error(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 3.0])) == pytest.approx(2 / 4)


@pytest.mark.parametrize("actual, reason", [
    (None, "got None"),
    ([1.0, 2.0], "expected a torch.Tensor, got list"),
    (torch.zeros(3), "shape (3,), expected (2,)"),
    (torch.tensor([float("nan"), 1.0]), "NaN"),
    (torch.tensor([1.0, 2.5]), "relative error"),
])
def test_check_close_fails_with_a_reason(capsys, actual, reason):
    assert helpers.check_close("x", actual, torch.tensor([1.0, 2.0])) is False
    out = capsys.readouterr().out
    assert reason in out and out.rstrip().endswith("FAIL")


def test_check_close_and_equal_pass(capsys):
    assert helpers.check_close("x", torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-12]))
    assert helpers.check_equal("y", torch.tensor([[1, 2]]), torch.tensor([[1, 2]]))
    assert not helpers.check_equal("y", torch.tensor([[1, 3]]), torch.tensor([[1, 2]]))
    assert "1 of 2 entries differ" in capsys.readouterr().out


def test_visible_check_reports_errors_but_lets_stubs_stop_the_notebook(capsys):
    with helpers.visible_check("unit_with_bug"):
        raise IndexError("index 5 is out of bounds")
    out = capsys.readouterr().out
    assert "IndexError at line" in out and out.rstrip().endswith("FAIL")
    with pytest.raises(NotImplementedError):
        with helpers.visible_check("unwritten_unit"):
            raise NotImplementedError()
    passed, run = helpers.check_summary()
    assert ("unit_with_bug", "runs without error", False) == helpers._RESULTS[-1][:3]
    assert passed < run


def test_decode_captions_stops_at_end_and_skips_padding():
    idx_to_word = ["<NULL>", "<START>", "<END>", "a", "cat", "sits"]
    captions = torch.tensor([[1, 3, 4, 5, 2, 3, 0], [1, 4, 0, 0, 0, 0, 0]])
    assert helpers.decode_captions(captions, idx_to_word) == ["a cat sits", "cat"]
    assert helpers.decode_captions(captions[0], idx_to_word) == "a cat sits"


def test_fixed_parameters_do_not_depend_on_the_random_generator():
    def filled(seed):
        torch.manual_seed(seed)
        layer = torch.nn.Linear(3, 2)
        helpers.set_parameters_fixed(layer, scale=0.5)
        return torch.cat([p.flatten() for p in layer.parameters()])

    assert torch.equal(filled(0), filled(1))
    assert filled(0).abs().max() <= 0.5 and filled(0).unique().numel() == 8


def test_a_float32_output_fails_the_visible_check_in_the_graders_words(capsys):
    """A typical `dx = torch.zeros(N, T, D)` (float32) used to pass every visible check and
    get 0 from the grader."""
    import numpy as np
    from autograder.checks import compare_output

    expected = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    assert helpers.check_close("dx", expected.float(), expected) is False
    said = "has dtype float32, expected float64"
    assert said in capsys.readouterr().out
    assert said in compare_output("dx", np.array([[1.0, 2.0]], dtype=np.float32), expected)
    assert helpers.check_equal("captions", torch.tensor([[1, 2]], dtype=torch.int32), torch.tensor([[1, 2]])) is False
    assert "has dtype int32, expected int64" in capsys.readouterr().out


def test_check_summary_shows_each_units_latest_checks_and_points(capsys, monkeypatch):
    monkeypatch.setattr(helpers, "_RESULTS", [])
    with helpers.visible_check("rnn_forward"):
        helpers.check_close("h", torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    with helpers.visible_check("rnn_forward"):  # the cell run again after a fix
        helpers.check_close("h", torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    for cell_type in ("rnn", "lstm"):
        with helpers.visible_check(f"CaptioningRNN ({cell_type})"):
            helpers.check_equal("sample", torch.tensor([1]), torch.tensor([1 if cell_type == "rnn" else 2]))
    capsys.readouterr()
    passing, checked = helpers.check_summary({"rnn_forward": 5, "CaptioningRNN": 25, "LSTM": 16})
    out = capsys.readouterr().out
    assert (passing, checked) == (1, 3)  # rnn_forward only; CaptioningRNN fails one; LSTM not run
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()[:1]}
    assert "5" in rows["rnn_forward"].split() and "1 of 1 pass" in rows["rnn_forward"]
    assert "1 of 2 pass" in rows["CaptioningRNN"] and "25" in rows["CaptioningRNN"].split()
    assert "not run" in rows["LSTM"]
