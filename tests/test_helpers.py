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


# --- the set-up cell: encoder switch and threads -----------------------------------------


def test_the_notebooks_switch_turns_the_pretrained_encoder_off(monkeypatch):
    """Issue: offline, the only way was an environment variable set before starting Jupyter."""
    monkeypatch.delenv("CAPTIONING_PRETRAINED", raising=False)
    assert helpers.use_pretrained_encoder(True) is True
    assert helpers.use_pretrained_encoder(False) is False
    monkeypatch.setenv("CAPTIONING_PRETRAINED", "0")  # what the tests and CI set
    assert helpers.use_pretrained_encoder(True) is False


def test_threads_are_limited_to_the_cap_and_the_cores_this_process_may_use(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(helpers.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
        assert helpers.limit_threads() == helpers.MAX_THREADS == torch.get_num_threads()
        assert helpers.limit_threads(3) == 3 == torch.get_num_threads()
        monkeypatch.setattr(helpers.os, "sched_getaffinity", lambda pid: {5}, raising=False)
        assert helpers.limit_threads(3) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


# --- training and memorising -------------------------------------------------------------


def test_training_outside_jupyter_prints_one_final_line(capsys):
    from solution.captioning import CaptioningRNN

    vocab = {"<NULL>": 0, "<START>": 1, "<END>": 2, "a": 3, "cat": 4}
    model = CaptioningRNN(vocab, wordvec_dim=4, hidden_dim=4, image_encoder_pretrained=False, ignore_index=0)
    features = torch.rand(3, 400, 4, 4)
    captions = torch.tensor([[1, 3, 4, 2], [1, 4, 2, 0], [1, 3, 2, 0]])
    losses = helpers.train_captioner(model, features, captions, epochs=4, batch_size=2, lr=1e-2,
                                     device=torch.device("cpu"), desc="tiny")
    assert len(losses) == 8
    out, err = capsys.readouterr()
    assert out.startswith("tiny: step 8/8, loss ") and out.count("\n") == 1 and not err


def test_overfit_result_counts_captions_given_back_word_for_word():
    class Echo(torch.nn.Module):
        """Samples the stored captions, one of them with a wrong word and one with words
        after <NULL> padding (which do not count: the caption ended at <END>)."""

        word_to_idx = {"<NULL>": 0, "<START>": 1, "<END>": 2}

        def __init__(self):
            super().__init__()
            self.image_encoder = torch.nn.Identity()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, images, captions):
            return self.weight.sum() + 0.25

        def sample(self, images, max_length):
            return torch.tensor([[3, 4, 2, 0], [3, 5, 2, 0], [4, 2, 7, 7]])[:, :max_length]

    captions = torch.tensor([[1, 3, 4, 2, 0], [1, 3, 4, 2, 0], [1, 4, 2, 0, 0]])
    assert helpers.overfit_result(Echo(), torch.zeros(3, 400, 4, 4), captions) == (0.25, 2)


def test_the_overfitting_targets_cover_every_cell_type():
    from solution.captioning import CELL_TYPES

    assert set(helpers.OVERFIT_TARGETS) == set(CELL_TYPES)
    assert set(helpers.OVERFIT_RECIPE) == {"epochs", "batch_size", "lr"}


# --- figures -----------------------------------------------------------------------------


@pytest.fixture
def agg_figures(monkeypatch):
    """The figures a helper draws, drawn (Agg) and left open; closed afterwards."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = []
    monkeypatch.setattr(plt, "show", lambda: drawn.append(plt.gcf()))
    yield drawn
    plt.close("all")


def test_captions_of_the_top_row_stay_clear_of_the_bottom_rows_images(agg_figures):
    """Issue: the second line of the top row's captions hid behind the bottom row's images."""
    long = "a man in a red shirt is riding a skateboard down the side of a ramp near a park"
    images = torch.randint(0, 256, (8, 3, 112, 112), dtype=torch.uint8)
    helpers.show_captioned_images(images, [long] * 8, title="grid")
    (fig,) = agg_figures
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 8
    for ax in axes:
        (caption,) = [t for t in (ax.title, ax.xaxis.label) if "skateboard" in t.get_text()]
        assert caption.get_text().count("\n") >= 2  # wrapped on three lines or more
        box = caption.get_window_extent(renderer)
        assert box.y1 <= ax.get_window_extent(renderer).y0 + 1  # under its own picture
        for other in axes:
            if other is not ax:
                assert not box.overlaps(other.get_window_extent(renderer))
        assert box.y0 >= -2  # inside the figure (to a pixel of the glyphs' rounding)


def test_attention_maps_have_a_colour_map_a_colour_bar_and_a_title(agg_figures):
    """Issue: a grey overlay at 60% opacity, no colour bar, nothing to say train or val."""
    weights = torch.softmax(torch.randn(3, 16), dim=1).view(3, 4, 4)
    image = torch.randint(0, 256, (3, 112, 112), dtype=torch.uint8)
    helpers.show_attention(image, ["a", "red", "bus"], weights, title="attn: where it looked, val image")
    (fig,) = agg_figures
    assert "val image" in fig.get_suptitle()
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and bars[0].get_ylabel().startswith("attention weight")
    overlays = [ax.images[1] for ax in fig.axes if len(ax.images) == 2]
    assert [ax.get_title() for ax in fig.axes if len(ax.images) == 2] == ["a", "red", "bus"]
    for overlay in overlays:  # one scale for every word, from 0 to the largest weight
        assert overlay.get_cmap().name not in ("gray", "Greys")
        assert overlay.get_clim() == (0, pytest.approx(weights.max().item()))
        assert overlay.norm is overlays[0].norm
