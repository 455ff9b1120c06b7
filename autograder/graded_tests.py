"""Every graded test, declared once: how its hidden inputs are drawn and how it calls the unit.

A graded test is a (unit, name) of points.toml, declared here by ``@graded_test`` on its
runner, with:

* ``run(ns, inputs, shared) -> {name: tensor}``: calls the unit in namespace ``ns`` (the
  reference module's in the grader, the student's in the sandboxed worker) the way the
  assignment specifies. The grader runs it on both sides and compares the outputs, so the
  calling convention exists once;
* ``cases(draw, context) -> ([(label, inputs)], shared)``: the hidden inputs of each case,
  drawn from ``draw`` (seeded by the grader's secret), a label that shows shapes only, and
  what every case shares (the captioner's settings; JSON). ``context`` is the grader's
  CaptionerFixture (COCO images and features), for the tests that need data;
* ``numeric``: for a hand-written backward pass, the reference forward whose centred
  differences its gradients must also match;
* ``tolerance``: of the relative error against the reference.

The grader checks the declarations against points.toml when it starts (checks.py). This
file is also copied into the sandbox: it holds how inputs are drawn and units called,
never a seed, a drawn value, an expected output or reference code, and it imports nothing
from the repository.
"""

from dataclasses import dataclass
from typing import Callable

import torch

# Relative error max|a - b| / max(|a| + |b|), in float64 with TF32 off: correct variants
# differ from the reference by about 1e-15, a real bug by more than 1e-3, and a float32 step
# anywhere (7 digits) by 1e-8 or more: the assignment asks for float64 throughout.
OUTPUT_TOLERANCE = 1e-10
NUMERIC_TOLERANCE = 1e-5  # hand-written gradients against centred differences
NUMERIC_STEP = 1e-6
# The outputs a forward test adds: the gradients autograd computes through the unit.
AUTOGRAD_PREFIX = "autograd_"

Inputs = dict[str, torch.Tensor]
Runner = Callable[[dict, Inputs, dict], Inputs]


@dataclass(frozen=True)
class Numeric:
    """Centred differences of sum(forward(*args)[0] * inputs[upstream]), by the reference."""

    forward: str  # the reference function
    args: tuple[str, ...]  # the inputs it takes, in order; gradients are named "d" + arg
    upstream: str


@dataclass(frozen=True)
class GradedTest:
    unit: str
    name: str
    run: Runner
    cases: Callable  # (Draw, context) -> ([(label, inputs)], shared)
    numeric: Numeric | None = None
    tolerance: float = OUTPUT_TOLERANCE


GRADED_TESTS: dict[tuple[str, str], GradedTest] = {}


def graded_test(unit: str, name: str, cases: Callable, numeric: Numeric | None = None,
                tolerance: float = OUTPUT_TOLERANCE):
    """Declare the decorated runner as the test ``name`` of ``unit`` (see the module's docstring)."""
    def declare(run: Runner) -> Runner:
        if (unit, name) in GRADED_TESTS:
            raise ValueError(f"{unit}.{name} is declared twice")
        GRADED_TESTS[(unit, name)] = GradedTest(unit, name, run, cases, numeric, tolerance)
        return run
    return declare


def runner(unit: str, name: str) -> Runner:
    return GRADED_TESTS[(unit, name)].run


# ---------------------------------------------------------------------------------------
# Drawing hidden inputs
# ---------------------------------------------------------------------------------------


class Draw:
    """float64 / int64 tensors from one seeded generator."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def randn(self, *shape, scale=1.0):
        return torch.randn(*shape, generator=self.g, dtype=torch.float64) * scale

    def randint(self, high, *shape):
        return torch.randint(0, high, shape, generator=self.g)


def shapes(names: str, sizes: list[tuple[int, ...]], inputs: Callable[..., Inputs]) -> Callable:
    """cases() for one case per entry of sizes: inputs(draw, **sizes) labelled "N=1, D=3"."""
    keys = [k.strip() for k in names.split(",")]

    def cases(d: Draw, context=None):
        drawn = []
        for size in sizes:
            named = dict(zip(keys, size))
            drawn.append((", ".join(f"{k}={v}" for k, v in named.items()), inputs(d, **named)))
        return drawn, {}
    return cases




def strict_float_math() -> None:
    """No TF32 in matrix products and convolutions, so that the GPU computes float64 and
    float32 as the CPU does, within the tolerances of checks.py."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


class PrecomputedFeatures(torch.nn.Module):
    """The sandbox's ImageEncoder: the grader encodes the images itself and gives the
    captioner their (N, 400, 4, 4) features, which the provided ImageEncoder passes through
    unchanged. Same constructor and output; no weights, no torchvision."""

    def __init__(self, pretrained: bool = True, verbose: bool = True):
        super().__init__()
        self.register_buffer("_dtype", torch.zeros(0), persistent=False)  # follows .double()

    @property
    def out_channels(self) -> int:
        return 400

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != self.out_channels or not images.is_floating_point():
            raise ValueError(f"the grader gives the image encoder precomputed features (N, 400, 4, 4), "
                             f"got {tuple(images.shape)}")
        return images.to(self._dtype.dtype)


def _set_parameters(module, inputs, prefix="param."):
    """Copy inputs named prefix + <parameter name> into module (shapes must match)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            key = prefix + name
            if key in inputs:
                if tuple(param.shape) != tuple(inputs[key].shape):
                    raise ValueError(f"parameter {name} has shape {tuple(param.shape)}, "
                                     f"expected {tuple(inputs[key].shape)}")
                param.copy_(inputs[key])


def _grads_of(output, dout, named_leaves):
    """Gradients of sum(output * dout) with respect to named_leaves, by autograd.

    A leaf that the output does not depend on gets a zero gradient (and fails the test).
    """
    names = list(named_leaves)
    grads = torch.autograd.grad(output, [named_leaves[n] for n in names], grad_outputs=dout,
                                allow_unused=True)
    return {f"d{n}": torch.zeros_like(named_leaves[n]) if g is None else g for n, g in zip(names, grads)}


def _leaves(inputs, names):
    return {n: inputs[n].detach().clone().requires_grad_(True) for n in names}


def _with_autograd(outputs: Inputs, upstream: Inputs, named_leaves) -> Inputs:
    """outputs, and the gradients of sum(outputs[k] * upstream[k]) with respect to
    named_leaves that autograd computes through the unit, named AUTOGRAD_PREFIX + "d<leaf>":
    a forward pass must let gradients through, or the model built on it cannot be trained.

    Outputs of the wrong type or shape, or that carry no gradient, get no gradients here:
    their own comparison, or the missing gradients', says why (checks.compare_output)."""
    if not all(isinstance(outputs.get(k), torch.Tensor) and outputs[k].shape == u.shape for k, u in upstream.items()):
        return outputs
    total = sum((outputs[k] * upstream[k]).sum() for k in upstream)
    if not total.requires_grad:
        return outputs
    grads = _grads_of(total, torch.ones_like(total), named_leaves)
    return {**outputs, **{AUTOGRAD_PREFIX + name: grad for name, grad in grads.items()}}


# ---------------------------------------------------------------------------------------
# Vanilla RNN
# ---------------------------------------------------------------------------------------


def rnn_step_inputs(d: Draw, N, D, H, upstream=False) -> Inputs:
    """x: (N, D), prev_h: (N, H), Wx: (D, H), Wh: (H, H), b: (H,) [, dnext_h: (N, H)]."""
    inputs = dict(x=d.randn(N, D), prev_h=d.randn(N, H), Wx=d.randn(D, H, scale=0.5),
                  Wh=d.randn(H, H, scale=0.5), b=d.randn(H))
    return {**inputs, "dnext_h": d.randn(N, H)} if upstream else inputs


def rnn_inputs(d: Draw, N, T, D, H, upstream=False) -> Inputs:
    """x: (N, T, D), h0: (N, H), Wx: (D, H), Wh: (H, H), b: (H,) [, dh: (N, T, H)]."""
    inputs = dict(x=d.randn(N, T, D), h0=d.randn(N, H), Wx=d.randn(D, H, scale=0.5),
                  Wh=d.randn(H, H, scale=0.5), b=d.randn(H))
    return {**inputs, "dh": d.randn(N, T, H)} if upstream else inputs


@graded_test("rnn_step_forward", "forward", shapes("N, D, H", [(1, 3, 4), (4, 5, 6), (3, 8, 5)],
                                                  lambda d, **n: rnn_step_inputs(d, **n, upstream=True)))
def rnn_step_forward__forward(ns, inputs, shared):
    leaves = _leaves(inputs, ["x", "prev_h", "Wx", "Wh", "b"])
    next_h, _ = ns["rnn_step_forward"](*leaves.values())
    return _with_autograd({"next_h": next_h}, {"next_h": inputs["dnext_h"]}, leaves)


@graded_test("rnn_step_backward", "gradients",
             shapes("N, D, H", [(1, 3, 4), (4, 5, 6)], lambda d, **n: rnn_step_inputs(d, **n, upstream=True)),
             numeric=Numeric("rnn_step_forward", ("x", "prev_h", "Wx", "Wh", "b"), "dnext_h"))
def rnn_step_backward__gradients(ns, inputs, shared):
    # The cache format is the student's own: their forward makes it for their backward.
    _, cache = ns["rnn_step_forward"](inputs["x"], inputs["prev_h"], inputs["Wx"], inputs["Wh"], inputs["b"])
    dx, dprev_h, dWx, dWh, db = ns["rnn_step_backward"](inputs["dnext_h"], cache)
    return {"dx": dx, "dprev_h": dprev_h, "dWx": dWx, "dWh": dWh, "db": db}


@graded_test("rnn_forward", "forward", shapes("N, T, D, H", [(1, 1, 3, 4), (3, 5, 4, 6), (2, 2, 6, 3)],
                                             lambda d, **n: rnn_inputs(d, **n, upstream=True)))
def rnn_forward__forward(ns, inputs, shared):
    # The provided RNN module trains through rnn_forward with autograd: its gradients count.
    leaves = _leaves(inputs, ["x", "h0", "Wx", "Wh", "b"])
    h, _ = ns["rnn_forward"](*leaves.values())
    return _with_autograd({"h": h}, {"h": inputs["dh"]}, leaves)


@graded_test("rnn_backward", "gradients",
             shapes("N, T, D, H", [(1, 1, 3, 4), (3, 4, 5, 6)], lambda d, **n: rnn_inputs(d, **n, upstream=True)),
             numeric=Numeric("rnn_forward", ("x", "h0", "Wx", "Wh", "b"), "dh"))
def rnn_backward__gradients(ns, inputs, shared):
    _, cache = ns["rnn_forward"](inputs["x"], inputs["h0"], inputs["Wx"], inputs["Wh"], inputs["b"])
    dx, dh0, dWx, dWh, db = ns["rnn_backward"](inputs["dh"], cache)
    return {"dx": dx, "dh0": dh0, "dWx": dWx, "dWh": dWh, "db": db}


# ---------------------------------------------------------------------------------------
# Word embedding and loss
# ---------------------------------------------------------------------------------------

EMBEDDING_SHAPES = [(1, 1, 7, 3), (3, 6, 5, 4)]  # few words, so that indices repeat
LOSS_SHAPES = [(1, 1, 5), (4, 6, 9), (3, 2, 12), (2, 3, 120)]


def embedding_inputs(d: Draw, N, T, V, D, upstream=False) -> Inputs:
    """param.W_embed: (V, D), x: (N, T) indices [, dout: (N, T, D)]."""
    inputs = {"param.W_embed": d.randn(V, D), "x": d.randint(V, N, T)}
    return {**inputs, "dout": d.randn(N, T, D)} if upstream else inputs


def loss_inputs(d: Draw, N, T, V, ignored=False) -> Inputs:
    """x: (N, T, V) scores, y: (N, T) indices [, ignore_index, with y[0, -1] ignored]."""
    inputs = {"x": d.randn(N, T, V, scale=2.0), "y": d.randint(V, N, T)}
    if V > 100:  # a large index among the targets: no index may be ignored by accident
        inputs["y"][-1, 0] = 100
    if ignored:
        inputs["y"][0, -1] = 0  # at least one ignored timestep
        inputs["ignore_index"] = torch.tensor(0)
    return inputs


def _embedding(ns, inputs):
    V, D = inputs["param.W_embed"].shape
    layer = ns["WordEmbedding"](V, D).double()
    _set_parameters(layer, inputs)
    return layer


@graded_test("WordEmbedding", "forward", shapes("N, T, V, D", EMBEDDING_SHAPES, embedding_inputs))
def WordEmbedding__forward(ns, inputs, shared):
    return {"out": _embedding(ns, inputs)(inputs["x"])}


@graded_test("WordEmbedding", "gradient",
             shapes("N, T, V, D", EMBEDDING_SHAPES, lambda d, **n: embedding_inputs(d, **n, upstream=True)))
def WordEmbedding__gradient(ns, inputs, shared):
    layer = _embedding(ns, inputs)
    out = layer(inputs["x"])
    return _grads_of(out, inputs["dout"], {"W_embed": layer.W_embed})


@graded_test("temporal_softmax_loss", "loss", shapes("N, T, V", LOSS_SHAPES, loss_inputs))
def temporal_softmax_loss__loss(ns, inputs, shared):
    return {"loss": ns["temporal_softmax_loss"](inputs["x"], inputs["y"])}


@graded_test("temporal_softmax_loss", "ignore_index",
             shapes("N, T, V", LOSS_SHAPES, lambda d, **n: loss_inputs(d, **n, ignored=True)))
def temporal_softmax_loss__ignore_index(ns, inputs, shared):
    return {"loss": ns["temporal_softmax_loss"](inputs["x"], inputs["y"], ignore_index=int(inputs["ignore_index"]))}


@graded_test("temporal_softmax_loss", "gradient",
             shapes("N, T, V", LOSS_SHAPES, lambda d, **n: loss_inputs(d, **n, ignored=True)))
def temporal_softmax_loss__gradient(ns, inputs, shared):
    leaves = _leaves(inputs, ["x"])
    loss = ns["temporal_softmax_loss"](leaves["x"], inputs["y"], ignore_index=int(inputs["ignore_index"]))
    return _grads_of(loss, torch.ones_like(loss), leaves)


# ---------------------------------------------------------------------------------------
# LSTM and attention
# ---------------------------------------------------------------------------------------


def lstm_params(d: Draw, D, H, attention=False) -> Inputs:
    """param.Wx: (D, 4H), param.Wh: (H, 4H), param.b: (4H,) [, param.Wattn: (H, 4H)]."""
    params = {"param.Wx": d.randn(D, 4 * H, scale=0.5), "param.Wh": d.randn(H, 4 * H, scale=0.5),
              "param.b": d.randn(4 * H)}
    if attention:
        params["param.Wattn"] = d.randn(H, 4 * H, scale=0.5)
    return params


def lstm_step_inputs(d: Draw, N, D, H, attention=False) -> Inputs:
    """The parameters, x: (N, D), prev_h, prev_c [, attn], dnext_h, dnext_c: (N, H)."""
    inputs = {**lstm_params(d, D, H, attention), "x": d.randn(N, D), "prev_h": d.randn(N, H),
              "prev_c": d.randn(N, H)}
    if attention:
        inputs["attn"] = d.randn(N, H)
    return {**inputs, "dnext_h": d.randn(N, H), "dnext_c": d.randn(N, H)}


def _step_with_autograd(layer, inputs, names) -> Inputs:
    """layer.step_forward on the named inputs, with the gradients autograd computes through it
    (the inputs' and the parameters')."""
    leaves = _leaves(inputs, names)
    next_h, next_c = layer.step_forward(*leaves.values())
    return _with_autograd({"next_h": next_h, "next_c": next_c},
                          {"next_h": inputs["dnext_h"], "next_c": inputs["dnext_c"]},
                          {**leaves, **dict(layer.named_parameters())})


def lstm_inputs(d: Draw, N, T, D, H, attention=False, upstream=False) -> Inputs:
    """The parameters, x: (N, T, D), then h0: (N, H) or, with attention, A: (N, H, 4, 4)
    [, dout: (N, T, H)]."""
    inputs = {**lstm_params(d, D, H, attention), "x": d.randn(N, T, D)}
    inputs.update({"A": d.randn(N, H, 4, 4)} if attention else {"h0": d.randn(N, H)})
    return {**inputs, "dout": d.randn(N, T, H)} if upstream else inputs


def attention_inputs(d: Draw, N, H, upstream=False) -> Inputs:
    """prev_h: (N, H), A: (N, H, 4, 4) [, dattn: (N, H), dweights: (N, 4, 4)]."""
    inputs = {"prev_h": d.randn(N, H), "A": d.randn(N, H, 4, 4)}
    return {**inputs, "dattn": d.randn(N, H), "dweights": d.randn(N, 4, 4)} if upstream else inputs


def _layer(ns, name, inputs):
    D, H4 = inputs["param.Wx"].shape
    layer = ns[name](D, H4 // 4).double()
    _set_parameters(layer, inputs)
    return layer


@graded_test("LSTM", "step_forward", shapes("N, D, H", [(1, 3, 4), (4, 5, 6)], lstm_step_inputs))
def LSTM__step_forward(ns, inputs, shared):
    return _step_with_autograd(_layer(ns, "LSTM", inputs), inputs, ["x", "prev_h", "prev_c"])


@graded_test("LSTM", "forward", shapes("N, T, D, H", [(1, 1, 3, 4), (3, 5, 4, 6)], lstm_inputs))
def LSTM__forward(ns, inputs, shared):
    return {"hn": _layer(ns, "LSTM", inputs)(inputs["x"], inputs["h0"])}


@graded_test("LSTM", "gradients",
             shapes("N, T, D, H", [(2, 4, 3, 5)], lambda d, **n: lstm_inputs(d, **n, upstream=True)))
def LSTM__gradients(ns, inputs, shared):
    layer = _layer(ns, "LSTM", inputs)
    leaves = _leaves(inputs, ["x", "h0"])
    out = layer(leaves["x"], leaves["h0"])
    return _grads_of(out, inputs["dout"], {**leaves, **dict(layer.named_parameters())})


@graded_test("dot_product_attention", "forward", shapes("N, H", [(1, 3), (4, 6), (2, 8)], attention_inputs))
def dot_product_attention__forward(ns, inputs, shared):
    attn, attn_weights = ns["dot_product_attention"](inputs["prev_h"], inputs["A"])
    return {"attn": attn, "attn_weights": attn_weights}


@graded_test("dot_product_attention", "gradients",
             shapes("N, H", [(3, 5)], lambda d, **n: attention_inputs(d, **n, upstream=True)))
def dot_product_attention__gradients(ns, inputs, shared):
    leaves = _leaves(inputs, ["prev_h", "A"])
    attn, attn_weights = ns["dot_product_attention"](leaves["prev_h"], leaves["A"])
    # One scalar from both outputs, so that both paths are checked.
    total = (attn * inputs["dattn"]).sum() + (attn_weights * inputs["dweights"]).sum()
    return _grads_of(total, torch.ones_like(total), leaves)


@graded_test("AttentionLSTM", "step_forward",
             shapes("N, D, H", [(1, 3, 4), (3, 5, 6)], lambda d, **n: lstm_step_inputs(d, **n, attention=True)))
def AttentionLSTM__step_forward(ns, inputs, shared):
    return _step_with_autograd(_layer(ns, "AttentionLSTM", inputs), inputs, ["x", "prev_h", "prev_c", "attn"])


@graded_test("AttentionLSTM", "forward",
             shapes("N, T, D, H", [(1, 1, 3, 4), (2, 4, 5, 6)], lambda d, **n: lstm_inputs(d, **n, attention=True)))
def AttentionLSTM__forward(ns, inputs, shared):
    return {"hn": _layer(ns, "AttentionLSTM", inputs)(inputs["x"], inputs["A"])}


@graded_test("AttentionLSTM", "gradients",
             shapes("N, T, D, H", [(2, 3, 4, 5)],
                    lambda d, **n: lstm_inputs(d, **n, attention=True, upstream=True)))
def AttentionLSTM__gradients(ns, inputs, shared):
    layer = _layer(ns, "AttentionLSTM", inputs)
    leaves = _leaves(inputs, ["x", "A"])
    out = layer(leaves["x"], leaves["A"])
    return _grads_of(out, inputs["dout"], {**leaves, **dict(layer.named_parameters())})


# ---------------------------------------------------------------------------------------
# The captioning model: real COCO images, one set of weights loaded by name
# ---------------------------------------------------------------------------------------


def captioner_cases(test: str) -> Callable:
    """cases() of a CaptioningRNN test: the grader's CaptionerFixture draws the images and
    weights, and gives the settings every case shares (the vocabulary, the cell type)."""
    return lambda d, context: context.cases(test, d)


_captioners = {}  # built once per class and settings: a RegNet is slow to build


def _captioner(ns, inputs, shared):
    """The unit's CaptioningRNN with the grader's weights loaded by state_dict (strict).

    Every test loads a complete state_dict, so a model built for an earlier test of the same
    settings serves again.
    """
    key = (id(ns["CaptioningRNN"]), shared["cell_type"], shared["wordvec_dim"],
           shared["hidden_dim"], shared["ignore_index"], len(shared["word_to_idx"]))
    if key not in _captioners:
        _captioners[key] = ns["CaptioningRNN"](
            shared["word_to_idx"], input_dim=400, wordvec_dim=shared["wordvec_dim"],
            hidden_dim=shared["hidden_dim"], cell_type=shared["cell_type"],
            image_encoder_pretrained=False, ignore_index=shared["ignore_index"],
        ).double()
    model = _captioners[key]
    state = {k[len("state."):]: v for k, v in inputs.items() if k.startswith("state.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        # load_state_dict lists missing and unexpected names: the reason the student needs.
        raise ValueError(f"the grader's weights do not fit CaptioningRNN by name: {exc}") from None
    return model.eval()


def captioning_loss(ns, inputs, shared):
    """The loss, and its gradient with respect to every weight, by autograd: training needs both."""
    model = _captioner(ns, inputs, shared)
    loss = model(inputs["images"], inputs["captions"])
    weights = {name: p for name, p in model.named_parameters() if p.requires_grad}
    return _with_autograd({"loss": loss}, {"loss": torch.ones_like(loss)}, weights)


def captioning_sample(ns, inputs, shared):
    model = _captioner(ns, inputs, shared)
    out = model.sample(inputs["images"], max_length=shared["max_length"])
    if shared["cell_type"] == "attn":
        captions, weights = out
        return {"captions": captions, "attn_weights": weights}
    return {"captions": out}


for _cell_type in ("rnn", "lstm", "attn"):
    for _kind, _run in (("loss", captioning_loss), ("sample", captioning_sample)):
        graded_test("CaptioningRNN", f"{_kind}_{_cell_type}", captioner_cases(f"{_kind}_{_cell_type}"))(_run)
