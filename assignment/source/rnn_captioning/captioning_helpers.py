"""Helpers for the RNN captioning notebook: set-up, data, visible checks, gradient checking,
training and plots.

This file ships with the assignment. Nothing in it is part of what you write or of what is
graded; read it if you are curious, but do not edit it (the grader uses its own copy).
"""

import contextlib
import math
import os
import random
import time
import traceback

import torch

# ---------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------


def pick_device() -> torch.device:
    """The first CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python's and torch's generators so that every run of the notebook matches."""
    random.seed(seed)
    torch.manual_seed(seed)
    # TF32 would make GPU results differ from the CPU's in the third digit.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def use_pretrained_encoder(switch: bool = True) -> bool:
    """Whether to load the encoder's ImageNet weights (a 21 MB download, cached afterwards).

    switch is the notebook's PRETRAINED_ENCODER: False on a machine without internet, and
    the notebook then runs with a random (seeded) encoder, whose sampled captions do not
    describe the images. The environment variable CAPTIONING_PRETRAINED=0 also turns the
    weights off, whatever the switch says (the course's tests run the notebook that way).
    """
    return bool(switch) and os.environ.get("CAPTIONING_PRETRAINED", "1") != "0"


# The notebook's models are small (128 hidden units, batches of 25): one CPU thread trains
# them as fast as two on a quiet machine, and on a shared one (a JupyterHub, a laptop doing
# other things) torch's default of a thread per core made training about 10x slower, each
# thread waiting for the other's turn on a busy core (figures: BENCHMARKS.md, "The notebook").
MAX_THREADS = 1


def limit_threads(most: int = MAX_THREADS) -> int:
    """Let torch use at most `most` CPU threads, and no more than the cores this process may
    run on; returns how many it uses. A GPU, when there is one, is not affected."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, min(most, cores))
    torch.set_num_threads(threads)
    return threads


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


def load_coco(path: str = "coco.pt") -> dict:
    """The COCO subset: a dict of tensors (see the notebook's data section for the keys)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{os.path.abspath(path)} is missing. It comes with the assignment: put coco.pt next "
            "to this notebook (your course page says where to get it)."
        )
    return torch.load(path, weights_only=True)


def decode_captions(captions: torch.Tensor, idx_to_word) -> str | list[str]:
    """Word indices to text; stops at <END> and leaves out <START> and <NULL>.

    captions: (T,) gives one string; (N, T) gives a list of N strings.
    """
    if captions.dim() == 2:
        return [decode_captions(row, idx_to_word) for row in captions]
    words = []
    for idx in captions.tolist():
        word = idx_to_word[idx]
        if word == "<END>":
            break
        if word not in ("<NULL>", "<START>"):
            words.append(word)
    return " ".join(words)


# ---------------------------------------------------------------------------------------
# Visible checks
# ---------------------------------------------------------------------------------------

# (unit, check name, passed, detail) for every check run in this session, for check_summary.
_RESULTS: list[tuple[str, str, bool, str]] = []
_current_unit = ["(no unit)"]


def rel_error(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-10) -> float:
    """max|x - y| / max(|x| + |y|): 0 for identical tensors, about 1 for unrelated ones."""
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    if x.numel() == 0:
        return 0.0
    return ((x - y).abs().max() / (x.abs() + y.abs()).max().clamp(min=eps)).item()


def _record(name: str, passed: bool, detail: str) -> bool:
    _RESULTS.append((_current_unit[0], name, passed, detail))
    print(f"  {name:<28} {detail:<44} {'PASS' if passed else 'FAIL'}")
    return passed


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _problem_with(actual, expected: torch.Tensor) -> str | None:
    """Why actual cannot be compared with expected at all, or None if it can: what the
    grader checks of an output's form, in the grader's words. New tensors take the dtype
    (and device) of the inputs: torch.zeros(N, D) is float32 when the inputs are float64."""
    if actual is None:
        return "got None: is it implemented and returned?"
    if not isinstance(actual, torch.Tensor):
        return f"expected a torch.Tensor, got {type(actual).__name__}"
    if actual.dtype != expected.dtype:
        return f"has dtype {_dtype_name(actual)}, expected {_dtype_name(expected)}"
    if tuple(actual.shape) != tuple(expected.shape):
        return f"shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    if actual.is_floating_point() and not torch.isfinite(actual).all():
        return "contains NaN or inf"
    return None


def check_close(name: str, actual, expected: torch.Tensor, tol: float = 1e-7) -> bool:
    """Print the relative error of actual against expected, and PASS or FAIL."""
    problem = _problem_with(actual, expected)
    if problem:
        return _record(name, False, problem)
    error = rel_error(actual, expected)
    return _record(name, error < tol, f"relative error {error:.2e} (need < {tol:.0e})")


def check_equal(name: str, actual, expected: torch.Tensor) -> bool:
    """PASS when actual has exactly expected's values (word indices, say)."""
    problem = _problem_with(actual, expected)
    if problem:
        return _record(name, False, problem)
    mismatches = (actual.detach().cpu().long() != expected.long()).sum().item()
    detail = "identical" if mismatches == 0 else f"{mismatches} of {expected.numel()} entries differ"
    return _record(name, mismatches == 0, detail)


@contextlib.contextmanager
def visible_check(unit: str):
    """Group the checks of one unit; an exception inside becomes a FAIL, not a crash.

    NotImplementedError still stops the notebook: it means the unit is not written yet.
    """
    print(f"{unit}:")
    _current_unit[0] = unit
    try:
        yield
    except NotImplementedError:
        raise
    except Exception as exc:  # the student's code failed: report it and let the notebook go on
        where = traceback.extract_tb(exc.__traceback__)[-1]
        _record("runs without error", False, f"{type(exc).__name__} at line {where.lineno}: {exc}"[:120])
    finally:
        _current_unit[0] = "(no unit)"


def check_summary(points: dict[str, int] | None = None) -> tuple[int, int]:
    """Print each graded unit's visible checks as they last ran (a check run again after a
    fix counts once, with its latest result) and the points the unit is worth; returns
    (units that pass, units checked). Not a score: the grader uses other inputs."""
    latest: dict[tuple[str, str], bool] = {}
    for group, name, passed, _ in _RESULTS:
        latest[(group.split(" (")[0], f"{group} {name}")] = passed  # "CaptioningRNN (rnn)" is CaptioningRNN
    units: dict[str, list[bool]] = {unit: [] for unit in points or {}}
    for (unit, _), passed in latest.items():
        units.setdefault(unit, []).append(passed)
    print(f"{'unit':<24} {'points':>6}  visible checks")
    for unit, results in units.items():
        worth = f"{points[unit]:>6}" if points and unit in points else f"{'':>6}"
        state = "not run" if not results else f"{sum(results)} of {len(results)} pass"
        print(f"{unit:<24} {worth}  {state}{'' if all(results) and results else '  <--'}")
    passing = sum(1 for results in units.values() if results and all(results))
    print(f"\n{passing} of {len(units)} units pass every visible check. This is not a score: the "
          "grader uses other inputs.")
    return passing, len(units)


def compute_numeric_gradient(f, x: torch.Tensor, dLdf: torch.Tensor | None = None, h: float = 1e-6):
    """Centred finite differences: the gradient of sum(f(x) * dLdf) with respect to x.

    f takes x and returns a tensor; dLdf defaults to ones. Use float64 inputs: in float32 the
    differences drown in rounding error. Returns a tensor shaped like x.
    """
    x = x.detach().clone()
    grad = torch.zeros_like(x)
    flat_x, flat_grad = x.view(-1), grad.view(-1)
    for i in range(flat_x.numel()):
        old = flat_x[i].item()
        flat_x[i] = old + h
        plus = f(x)
        flat_x[i] = old - h
        minus = f(x)
        flat_x[i] = old
        weights = torch.ones_like(plus) if dLdf is None else dLdf
        flat_grad[i] = ((plus - minus) * weights).sum().item() / (2 * h)
    return grad


def linspace_tensor(shape, low: float, high: float, dtype=torch.float64) -> torch.Tensor:
    """A tensor of the given shape filled row by row with evenly spaced values in [low, high]."""
    return torch.linspace(low, high, steps=math.prod(shape), dtype=dtype).reshape(shape)


def set_parameters_fixed(module: torch.nn.Module, scale: float = 1.0) -> None:
    """Overwrite every trainable parameter of module with fixed values in [-scale, scale].

    The visible checks use this so that their expected values depend neither on how
    parameters are initialised nor on the random generator. The values, a sine of the
    position, vary like random ones without being random.
    """
    with torch.no_grad():
        trainable = [p for p in module.parameters() if p.requires_grad]
        for k, param in enumerate(trainable):
            position = torch.arange(param.numel(), dtype=torch.float64)
            values = scale * torch.sin(0.9 * position + 1.3 * (k + 1))
            param.copy_(values.reshape(param.shape))


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------


# How the notebook overfits a small slice of the data, declared once: the first caption of
# each of the first OVERFIT_EXAMPLES training images, trained with OVERFIT_RECIPE. Under it a
# correct implementation of each cell type memorises the slice (greedy sampling gives back
# every caption word for word) and ends with a loss over the slice below OVERFIT_TARGETS
# (tests/test_overfit.py checks the reference against both, for several seeds, with the
# random encoder; BENCHMARKS.md has the losses it reaches).
OVERFIT_EXAMPLES = 50
OVERFIT_RECIPE = dict(epochs=800, batch_size=25, lr=3e-3)
OVERFIT_TARGETS = {"rnn": 0.1, "lstm": 0.5, "attn": 0.25}


def overfit_slice(data: dict, count: int = OVERFIT_EXAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, captions): the first caption of each of the first count training images.

    One caption per image: an image with five different captions cannot be memorised.
    """
    image_idxs = data["train_image_idxs"].tolist()
    rows = torch.tensor([image_idxs.index(i) for i in range(count)])
    return data["train_images"][data["train_image_idxs"][rows]], data["train_captions"][rows]


class _Progress:
    """One line saying how far training has gone. In Jupyter it is a display updated in
    place, whose last update is the final line: a saved notebook shows that line (a tqdm
    widget is saved as its first state, "0%| | 0/600"). Elsewhere only the final line is
    printed."""

    def __init__(self, desc: str, total: int, every: float = 0.5):
        self.desc, self.total, self.every = desc, total, every
        self.start = self.shown = time.perf_counter()
        self.handle = None
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        shell = get_ipython()
        if shell is not None and getattr(shell, "kernel", None) is not None:
            self.handle = display({"text/plain": self.line(0, None)}, raw=True, display_id=True)

    def line(self, done: int, loss: float | None) -> str:
        seconds = time.perf_counter() - self.start
        text = f"{self.desc}: step {done}/{self.total}"
        if loss is not None:
            text += f", loss {loss:.3f}"
        text += f", {seconds:.1f} s"
        if 0 < done < self.total:
            text += f" (about {seconds / done * (self.total - done):.0f} s left)"
        return text

    def update(self, done: int, loss: float) -> None:
        now = time.perf_counter()
        if self.handle is not None and now - self.shown >= self.every:
            self.handle.update({"text/plain": self.line(done, loss)}, raw=True)
            self.shown = now

    def close(self, done: int, loss: float | None) -> None:
        if self.handle is not None:
            self.handle.update({"text/plain": self.line(done, loss)}, raw=True)
        else:
            print(self.line(done, loss))


def train_captioner(model, images, captions, *, epochs: int, batch_size: int, lr: float,
                    device: torch.device, desc: str = "training") -> list[float]:
    """Train model (a CaptioningRNN) with Adam on (images, captions); returns the loss per step.

    images: (N, 3, 112, 112) uint8; captions: (N, T) int64. The encoder is frozen, so its
    features are computed once and fed to the model in place of the images.
    """
    model.to(device).train()
    with torch.no_grad():
        features = model.image_encoder(images.to(device))
    captions = captions.to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    progress = _Progress(desc, epochs * math.ceil(len(captions) / batch_size))
    for _ in range(epochs):
        order = torch.randperm(len(captions), device=device)
        for start in range(0, len(captions), batch_size):
            batch = order[start : start + batch_size]
            loss = model(features[batch], captions[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            progress.update(len(losses), losses[-1])
    progress.close(len(losses), losses[-1] if losses else None)
    return losses


def _words(caption: list[int], end: int) -> list[int]:
    """A caption's word indices up to and including its first <END>."""
    return caption[: caption.index(end) + 1] if end in caption else caption


@torch.no_grad()
def overfit_result(model, images, captions) -> tuple[float, int]:
    """(loss over all of captions, how many of them model gives back word for word when it
    samples greedily from their images): what memorising a slice means."""
    model.eval()
    device = next(model.parameters()).device
    captions = captions.to(device)
    features = model.image_encoder(images.to(device))
    loss = float(model(features, captions))
    sampled = model.sample(features, max_length=captions.shape[1] - 1)
    sampled = sampled[0] if isinstance(sampled, tuple) else sampled
    end = model.word_to_idx["<END>"]
    exact = sum(_words(got, end) == _words(want, end)
                for got, want in zip(sampled.tolist(), captions[:, 1:].tolist()))
    return loss, exact


def report_overfit(cell_type: str, model, images, captions) -> bool:
    """Print the trained model's loss over the slice and how many captions it memorised,
    against the targets of OVERFIT_TARGETS; returns whether both are met."""
    loss, exact = overfit_result(model, images, captions)
    target = OVERFIT_TARGETS[cell_type]
    met = loss < target and exact == len(captions)
    print(f"final loss ({cell_type}): {loss:.3f} over the {len(captions)} captions (target: below {target}); "
          f"memorised {exact} of {len(captions)} (target: all); {'targets met' if met else 'TARGETS MISSED'}")
    return met


# ---------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------


def _as_picture(image: torch.Tensor):
    """(3, H, W) uint8 or float tensor -> (H, W, 3) array for imshow."""
    image = image.detach().cpu()
    if image.is_floating_point():
        image = (image.clamp(0, 1) * 255).round()
    return image.to(torch.uint8).permute(1, 2, 0).numpy()


def _caption_axes(ax, caption: str, width: int = 30) -> None:
    """Write caption, wrapped, under the picture of ax. It is the axes' x label, which the
    figure's layout makes room for (a title moved under the axes is not, and the next row
    of pictures covered its second line)."""
    import textwrap

    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel("\n".join(textwrap.wrap(caption, width)) or " ", fontsize=9, labelpad=4)


def show_captioned_images(images: torch.Tensor, captions: list[str], title: str = "", ncols: int = 4):
    """A grid of images, each with its caption underneath. images: (N, 3, H, W)."""
    import matplotlib.pyplot as plt

    nrows = math.ceil(len(images) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.9 * nrows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.axis("on")
        ax.imshow(_as_picture(image))
        _caption_axes(ax, caption)
    if title:
        fig.suptitle(title)
    plt.show()


def plot_losses(histories: dict[str, list[float]]):
    """Training loss per step, one curve per model."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, losses in histories.items():
        ax.plot(losses, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Overfitting a small slice of COCO")
    plt.show()


def show_attention(image: torch.Tensor, words: list[str], weights: torch.Tensor, title: str = "",
                   ncols: int = 6):
    """Where the model looked for each word it generated: the attention weights of the 4x4
    grid in colour over the image, on one scale for every word (the colour bar's), from 0 to
    the largest weight, stretched at the low end (a square-root scale) so that weights near
    a uniform attention's 1/16, marked on the bar, still differ in colour.

    image: (3, H, W); words: the generated words; weights: (len(words), 4, 4) attention.
    """
    import matplotlib.pyplot as plt
    import torch.nn.functional as F
    from matplotlib.colors import PowerNorm

    picture = _as_picture(image)
    height, width = picture.shape[:2]
    weights = weights.detach().float().cpu()
    # Bilinear upsampling of the 4x4 grid shows the weights at the image's scale.
    maps = F.interpolate(weights[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    scale = PowerNorm(0.5, vmin=0, vmax=max(float(weights.max()), 1 / 16) if len(words) else 1 / 16)
    panels = len(words) + 1
    nrows = math.ceil(panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols + 0.8, 2.5 * nrows + 0.6), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(picture)
    axes.flat[0].set_title("image", fontsize=9)
    shown = None
    for ax, word, weight_map in zip(list(axes.flat)[1:], words, maps):
        ax.imshow(picture)
        shown = ax.imshow(weight_map.numpy(), cmap="inferno", norm=scale, alpha=0.6)
        ax.set_title(word, fontsize=9)
    if shown is not None:
        bar = fig.colorbar(shown, ax=axes, shrink=0.8, pad=0.02)
        bar.solids.set_alpha(1)
        bar.ax.axhline(1 / 16, color="cyan", linewidth=2)
        bar.set_label("attention weight (cyan line: 1/16, uniform)")
    if title:
        fig.suptitle(title)
    plt.show()
