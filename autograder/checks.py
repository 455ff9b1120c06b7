"""The grader's tests: hidden inputs, the reference's outputs on them, and the comparison.

Every (unit, test) of ``points.toml`` is declared once in ``graded_tests.py`` (its cases,
its runner, its tolerance); this module checks the two agree, draws each test's cases from
a seed the student cannot predict, and runs the reference on them in the grader's own
process through the same runner the worker uses. Hand-written backward passes are also
compared with numeric gradients.

Tolerances (relative error, float64, TF32 off; their values in graded_tests.py):
* outputs and autograd gradients against the reference: below a test's tolerance
  (OUTPUT_TOLERANCE unless it declares another);
* hand-written gradients against centred differences (NUMERIC_STEP): below NUMERIC_TOLERANCE;
* integer outputs (sampled captions): identical.
"""

import contextlib
import hashlib
import importlib.metadata
import io
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from autograder import DATA_FILE, POINTS_FILE, graded_tests, write_atomically
from autograder.graded_tests import AUTOGRAD_PREFIX, NUMERIC_STEP, NUMERIC_TOLERANCE, OUTPUT_TOLERANCE, Draw
from solution import captioning as reference

# The grader's image encoder: torchvision's RegNet-X 400MF with its own initialisation, seeded
# (features of a sensible scale, so that the image really shapes h0). Its features of the val
# images are computed once and kept here, so that grading never imports torchvision.
ENCODER_SEED = 0
FEATURES_CACHE = DATA_FILE.with_name("encoder_features.pt")
CAPTION_MODEL = dict(wordvec_dim=16, hidden_dim=12, max_length=8)


def load_points() -> dict[str, dict[str, int]]:
    """{unit: {test: points}} of points.toml, checked: 100 in all, every test declared."""
    with open(POINTS_FILE, "rb") as f:
        points = tomllib.load(f)
    total = sum(sum(tests.values()) for tests in points.values())
    if total != 100:
        raise ValueError(f"{POINTS_FILE} sums to {total}, not 100")
    check_declarations(points, graded_tests.GRADED_TESTS)
    return points


def check_declarations(points: dict, declared: dict) -> None:
    """ValueError unless points.toml and graded_tests.py name the same (unit, test) pairs."""
    listed = {(unit, test) for unit, tests in points.items() for test in tests}
    undeclared, unlisted = sorted(listed - set(declared)), sorted(set(declared) - listed)
    if undeclared or unlisted:
        raise ValueError(
            "points.toml and autograder/graded_tests.py disagree: "
            + "; ".join(filter(None, [
                undeclared and "no @graded_test for " + ", ".join(f"{u}.{t}" for u, t in undeclared),
                unlisted and "no points for " + ", ".join(f"{u}.{t}" for u, t in unlisted)])))


@dataclass
class Case:
    """One hidden input of a test and what the grader expects of it."""

    label: str  # shapes only: shown to the student, never values
    inputs: dict[str, torch.Tensor]
    expected: dict[str, torch.Tensor] = field(default_factory=dict)
    numeric: dict[str, torch.Tensor] = field(default_factory=dict)  # extra, for backward tests


@dataclass
class HiddenTest:
    """A graded test (graded_tests.py) with its hidden cases drawn and the reference's outputs."""

    unit: str
    name: str
    points: int
    cases: list[Case]
    shared: dict = field(default_factory=dict)  # what every case shares (JSON: the captioner's settings)
    tolerance: float = OUTPUT_TOLERANCE


# ---------------------------------------------------------------------------------------
# The captioner's tests: real COCO images, one set of weights loaded by name
# ---------------------------------------------------------------------------------------


def features_key(coco: dict) -> str:
    """What the encoder's features depend on: the images, the libraries, the seed."""
    digest = hashlib.sha256(coco["val_images"].contiguous().numpy().tobytes())
    for package in ("torch", "torchvision"):
        digest.update(f"{package}={importlib.metadata.version(package)};".encode())
    digest.update(f"seed={ENCODER_SEED}".encode())
    return digest.hexdigest()


def encoder_features(coco: dict, cache: Path = FEATURES_CACHE) -> torch.Tensor:
    """The grader's encoder features of every val image, (N_val, 400, 4, 4) float64.

    Read from cache when it holds the features of these images by these libraries; else
    computed (importing torchvision: about 3 s) and written there, atomically, for the next
    grader. A cache that cannot be read or written costs time, never a wrong feature.
    """
    try:
        stored = torch.load(cache, weights_only=True)
        if stored["key"] == features_key(coco):
            return stored["features"]
    except Exception:  # missing, stale, truncated, written by another version
        pass
    blob = features_file(coco)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with write_atomically(cache, "wb") as f:
            f.write(blob)
    except OSError:
        pass
    return torch.load(io.BytesIO(blob), weights_only=True)["features"]


def features_file(coco: dict) -> bytes:
    """The content of a features cache for coco: its key and the features, computed."""
    torch.manual_seed(ENCODER_SEED)
    encoder = reference.ImageEncoder(pretrained=False, verbose=False).double()
    with torch.no_grad():
        features = torch.cat([encoder(batch) for batch in coco["val_images"].split(32)])
    blob = io.BytesIO()
    torch.save({"key": features_key(coco), "features": features}, blob)
    return blob.getvalue()


@contextlib.contextmanager
def _encoder_passes_features():
    """Reference captioners built inside take precomputed features for images, as the
    sandbox's do (graded_tests.PrecomputedFeatures): no torchvision, no encoder weights."""
    original, reference.ImageEncoder = reference.ImageEncoder, graded_tests.PrecomputedFeatures
    try:
        yield
    finally:
        reference.ImageEncoder = original


class CaptionerFixture:
    """The data and encoder features the CaptioningRNN tests share (built once per grader)."""

    def __init__(self, coco: dict):
        self.coco = coco
        self.word_to_idx = coco["vocab"]["token_to_idx"]
        self.features = encoder_features(coco)  # (N_val, 400, 4, 4), indexed like val_images
        self._bases = {}  # cell type -> a reference captioner whose weights get redrawn

    def cases(self, test: str, d: Draw) -> tuple[list[tuple[str, dict]], dict]:
        cell_type = test.split("_", 1)[1]
        options = dict(word_to_idx=self.word_to_idx, cell_type=cell_type,
                       ignore_index=self.word_to_idx["<NULL>"], **CAPTION_MODEL)
        n_images = 3
        picks = torch.randperm(len(self.coco["val_captions"]), generator=d.g)[:n_images]
        # The captioner's "images" are their encoder features, which the provided
        # ImageEncoder passes through (no sandbox needs torchvision).
        images = self.features[self.coco["val_image_idxs"][picks]]
        model_seed = int(d.randint(2**31, 1))
        if test.startswith("sample_"):
            model = self._model_whose_captions_end(cell_type, model_seed, images, options)
        else:
            model = self._model(cell_type, model_seed)
        inputs = {f"state.{k}": v.clone() for k, v in model.state_dict().items()}
        inputs["images"] = images
        if test.startswith("loss_"):
            inputs["captions"] = self.coco["val_captions"][picks]
        return [(f"N={n_images} COCO val images", inputs)], options

    def _model(self, cell_type: str, seed: int):
        """The reference captioner (taking encoder features) with weights drawn from seed.

        One model per cell type is built; its weights are drawn again for each test, each
        scaled by 1/sqrt(its input size).
        """
        if cell_type not in self._bases:
            with _no_initialisation(), _encoder_passes_features():  # every weight is set below
                self._bases[cell_type] = reference.CaptioningRNN(
                    self.word_to_idx, wordvec_dim=CAPTION_MODEL["wordvec_dim"],
                    hidden_dim=CAPTION_MODEL["hidden_dim"], cell_type=cell_type,
                    image_encoder_pretrained=False).double()
        model = self._bases[cell_type]
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                fan_in = param.shape[-1] if name.endswith("weight") else param.shape[0]
                param.copy_(torch.randn(param.shape, generator=g, dtype=param.dtype) / math.sqrt(fan_in))
        return model

    def _model_whose_captions_end(self, cell_type: str, seed: int, images, options):
        """A model whose greedy captions end with <END> after at least one word.

        Random weights almost never produce <END>, and then what sample does after a caption
        ends (write <NULL>, zero attention) would go untested. The bias of <END> is raised,
        by bisection, to just where a first <END> appears; weights are drawn again until
        that <END> is not the first word.
        """
        end, max_length = self.word_to_idx["<END>"], options["max_length"]
        features = None
        for attempt in range(10):
            model = self._model(cell_type, seed + attempt)
            if features is None:
                features = model.image_encoder(images)

            def first_end(extra):
                with torch.no_grad():
                    model.output_projection.bias[end] += extra
                    out = model.sample(features, max_length=max_length)
                    model.output_projection.bias[end] -= extra
                captions = out[0] if isinstance(out, tuple) else out
                positions = (captions == end).nonzero()[:, 1]
                return int(positions.min()) if len(positions) else None

            low, high = 0.0, 50.0
            if first_end(high) is None:
                continue
            for _ in range(30):
                middle = (low + high) / 2
                low, high = (low, middle) if first_end(middle) is not None else (middle, high)
            if 1 <= first_end(high) < max_length - 1:
                with torch.no_grad():
                    model.output_projection.bias[end] += high
                return model
        return model


@contextlib.contextmanager
def _no_initialisation():
    """torch.nn.init does nothing inside: for modules whose every weight is set afterwards."""
    names = ("kaiming_uniform_", "kaiming_normal_", "normal_", "uniform_", "zeros_", "ones_", "constant_")
    originals = {name: getattr(nn.init, name) for name in names}
    for name in names:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(nn.init, name, function)


# ---------------------------------------------------------------------------------------
# Building the tests: inputs and expected outputs
# ---------------------------------------------------------------------------------------


def test_seed(seed: int, unit: str, test: str) -> int:
    """Each test's own seed, so that tests do not depend on each other or on their order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{unit}:{test}".encode()).digest()[:8], "big")


def reference_namespace() -> dict:
    return vars(reference)


def numeric_gradients(numeric: graded_tests.Numeric, inputs: dict) -> dict[str, torch.Tensor]:
    """Centred differences of the reference forward named by numeric, for the hand-written
    backward tests: {"d" + arg: a tensor shaped like inputs[arg]}."""
    forward, upstream = getattr(reference, numeric.forward), inputs[numeric.upstream]
    values = {n: inputs[n].clone() for n in numeric.args}

    def objective() -> float:
        return (forward(*[values[n] for n in numeric.args])[0] * upstream).sum().item()

    grads = {}
    for n in numeric.args:
        flat, grad = values[n].view(-1), torch.zeros_like(values[n])
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + NUMERIC_STEP
            plus = objective()
            flat[i] = old - NUMERIC_STEP
            minus = objective()
            flat[i] = old
            grad.view(-1)[i] = (plus - minus) / (2 * NUMERIC_STEP)
        grads["d" + n] = grad
    return grads


def build_test(declared: graded_tests.GradedTest, points: int, seed: int, fixture: CaptionerFixture) -> HiddenTest:
    """One test of points.toml with its hidden cases drawn (add_expected adds the
    reference's outputs)."""
    drawn, shared = declared.cases(Draw(test_seed(seed, declared.unit, declared.name)), fixture)
    return HiddenTest(declared.unit, declared.name, points, [Case(label, inputs) for label, inputs in drawn],
                      shared, declared.tolerance)


def add_expected(tests) -> None:
    """The reference's outputs (and centred differences, for a hand-written backward) on
    every case of tests that has none yet."""
    for test in tests:
        declared = graded_tests.GRADED_TESTS[(test.unit, test.name)]
        for case in test.cases:
            if case.expected:
                continue
            with _encoder_passes_features():
                outputs = declared.run(reference_namespace(), case.inputs, test.shared)
            case.expected = {k: v.detach() for k, v in outputs.items()}
            if declared.numeric is not None:
                case.numeric = numeric_gradients(declared.numeric, case.inputs)


class HiddenTests:
    """One submission's tests, in the order of points.toml, each drawn when first asked for:
    a group's job can go to the sandbox as soon as its own tests are drawn, so the first
    units run while the captioner's cases (a search for weights whose captions end, 0.2 s)
    are still being drawn. A test's draw depends on its seed alone, never on the order."""

    def __init__(self, seed: int, coco: dict, fixture: CaptionerFixture | None = None):
        self._seed, self._fixture = seed, fixture or CaptionerFixture(coco)
        self._declared = [(graded_tests.GRADED_TESTS[(unit, name)], points)
                          for unit, unit_tests in load_points().items() for name, points in unit_tests.items()]
        self._drawn: dict[int, HiddenTest] = {}

    def of(self, units) -> list[HiddenTest]:
        """The tests of units (drawn now if they were not)."""
        return [self._draw(i) for i, (declared, _) in enumerate(self._declared) if declared.unit in units]

    def __iter__(self):
        return iter([self._draw(i) for i in range(len(self._declared))])

    def _draw(self, index: int) -> HiddenTest:
        if index not in self._drawn:
            declared, points = self._declared[index]
            self._drawn[index] = build_test(declared, points, self._seed, self._fixture)
        return self._drawn[index]


def build_tests(seed: int, coco: dict, fixture: CaptionerFixture | None = None) -> list[HiddenTest]:
    """Every test of points.toml, in its order, with its hidden cases and the reference's
    outputs."""
    tests = list(HiddenTests(seed, coco, fixture))
    add_expected(tests)
    return tests


# ---------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    if a.numel() == 0:
        return 0.0
    return ((a - b).abs().max() / (a.abs() + b.abs()).max().clamp(min=1e-30)).item()


def compare_output(name: str, actual, expected: torch.Tensor, tol: float = OUTPUT_TOLERANCE) -> str | None:
    """Why actual (a numpy array from the worker, or None) is not expected; None if it is."""
    import numpy as np

    if actual is None and name.startswith(AUTOGRAD_PREFIX):
        return (f"no gradient {name.removeprefix(AUTOGRAD_PREFIX)} flows back: the output does not require grad "
                "(a .detach(), .item(), .numpy() or a new tensor on the way?), so a model built on it could not "
                "be trained")
    if actual is None:
        return f"no output {name}"
    if not isinstance(actual, np.ndarray) or actual.dtype == object:
        return f"output {name} is not an array"
    want_dtype = str(expected.dtype).replace("torch.", "")
    if str(actual.dtype) != want_dtype:
        return f"output {name} has dtype {actual.dtype}, expected {want_dtype}"
    if tuple(actual.shape) != tuple(expected.shape):
        return f"output {name} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    got = torch.from_numpy(np.array(actual, copy=True))
    if expected.is_floating_point():
        if not torch.isfinite(got).all():
            return f"output {name} contains NaN or inf"
        error = rel_error(got, expected)
        if not error < tol:  # "not <" so that a NaN error fails too
            return f"output {name}: relative error {error:.1e} (tolerance {tol:.0e})"
        return None
    mismatches = int((got != expected).sum())
    if mismatches:
        return f"output {name}: {mismatches} of {expected.numel()} values differ"
    return None


def judge_case(case: Case, outputs: dict, tolerance: float = OUTPUT_TOLERANCE) -> str | None:
    """The first reason this case fails, or None when every output matches."""
    for name, expected in case.expected.items():
        reason = compare_output(name, outputs.get(name), expected, tolerance)
        if reason:
            return reason
    for name, numeric in case.numeric.items():
        reason = compare_output(name, outputs.get(name), numeric, NUMERIC_TOLERANCE)
        if reason:
            return reason.replace(f"output {name}", f"{name} against numeric gradients")
    return None


def format_label(case: Case, index: int, count: int) -> str:
    return f"case {index + 1} of {count} ({case.label})"
