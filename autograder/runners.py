"""How each graded test calls the code under test: one runner per (unit, test).

A runner takes a namespace (the reference module's, in the grader; the student's, in the
sandboxed worker) and the test's inputs, calls the unit the way the assignment specifies,
and returns its outputs as a dict of tensors. The grader runs the same runner on both sides
and compares, so the calling convention exists once. This file contains no solution code
and is copied into the sandbox; it must import nothing from the repository.
"""

import torch

CELL_TYPES = ("rnn", "lstm", "attn")


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


# ---------------------------------------------------------------------------------------
# Vanilla RNN
# ---------------------------------------------------------------------------------------


def rnn_step_forward__forward(ns, inputs):
    next_h, _ = ns["rnn_step_forward"](inputs["x"], inputs["prev_h"], inputs["Wx"], inputs["Wh"], inputs["b"])
    return {"next_h": next_h}


def rnn_step_backward__gradients(ns, inputs):
    # The cache format is the student's own: their forward makes it for their backward.
    _, cache = ns["rnn_step_forward"](inputs["x"], inputs["prev_h"], inputs["Wx"], inputs["Wh"], inputs["b"])
    dx, dprev_h, dWx, dWh, db = ns["rnn_step_backward"](inputs["dnext_h"], cache)
    return {"dx": dx, "dprev_h": dprev_h, "dWx": dWx, "dWh": dWh, "db": db}


def rnn_forward__forward(ns, inputs):
    h, _ = ns["rnn_forward"](inputs["x"], inputs["h0"], inputs["Wx"], inputs["Wh"], inputs["b"])
    return {"h": h}


def rnn_backward__gradients(ns, inputs):
    _, cache = ns["rnn_forward"](inputs["x"], inputs["h0"], inputs["Wx"], inputs["Wh"], inputs["b"])
    dx, dh0, dWx, dWh, db = ns["rnn_backward"](inputs["dh"], cache)
    return {"dx": dx, "dh0": dh0, "dWx": dWx, "dWh": dWh, "db": db}


# ---------------------------------------------------------------------------------------
# Word embedding and loss
# ---------------------------------------------------------------------------------------


def _embedding(ns, inputs):
    V, D = inputs["param.W_embed"].shape
    layer = ns["WordEmbedding"](V, D).double()
    _set_parameters(layer, inputs)
    return layer


def WordEmbedding__forward(ns, inputs):
    return {"out": _embedding(ns, inputs)(inputs["x"])}


def WordEmbedding__gradient(ns, inputs):
    layer = _embedding(ns, inputs)
    out = layer(inputs["x"])
    return _grads_of(out, inputs["dout"], {"W_embed": layer.W_embed})


def temporal_softmax_loss__loss(ns, inputs):
    return {"loss": ns["temporal_softmax_loss"](inputs["x"], inputs["y"])}


def temporal_softmax_loss__ignore_index(ns, inputs):
    return {"loss": ns["temporal_softmax_loss"](inputs["x"], inputs["y"], ignore_index=int(inputs["ignore_index"]))}


def temporal_softmax_loss__gradient(ns, inputs):
    leaves = _leaves(inputs, ["x"])
    loss = ns["temporal_softmax_loss"](leaves["x"], inputs["y"], ignore_index=int(inputs["ignore_index"]))
    return _grads_of(loss, torch.ones_like(loss), leaves)


# ---------------------------------------------------------------------------------------
# LSTM and attention
# ---------------------------------------------------------------------------------------


def _layer(ns, name, inputs):
    D, H4 = inputs["param.Wx"].shape
    layer = ns[name](D, H4 // 4).double()
    _set_parameters(layer, inputs)
    return layer


def LSTM__step_forward(ns, inputs):
    next_h, next_c = _layer(ns, "LSTM", inputs).step_forward(inputs["x"], inputs["prev_h"], inputs["prev_c"])
    return {"next_h": next_h, "next_c": next_c}


def LSTM__forward(ns, inputs):
    return {"hn": _layer(ns, "LSTM", inputs)(inputs["x"], inputs["h0"])}


def LSTM__gradients(ns, inputs):
    layer = _layer(ns, "LSTM", inputs)
    leaves = _leaves(inputs, ["x", "h0"])
    out = layer(leaves["x"], leaves["h0"])
    return _grads_of(out, inputs["dout"], {**leaves, **dict(layer.named_parameters())})


def dot_product_attention__forward(ns, inputs):
    attn, attn_weights = ns["dot_product_attention"](inputs["prev_h"], inputs["A"])
    return {"attn": attn, "attn_weights": attn_weights}


def dot_product_attention__gradients(ns, inputs):
    leaves = _leaves(inputs, ["prev_h", "A"])
    attn, attn_weights = ns["dot_product_attention"](leaves["prev_h"], leaves["A"])
    # One scalar from both outputs, so that both paths are checked.
    total = (attn * inputs["dattn"]).sum() + (attn_weights * inputs["dweights"]).sum()
    return _grads_of(total, torch.ones_like(total), leaves)


def AttentionLSTM__step_forward(ns, inputs):
    layer = _layer(ns, "AttentionLSTM", inputs)
    next_h, next_c = layer.step_forward(inputs["x"], inputs["prev_h"], inputs["prev_c"], inputs["attn"])
    return {"next_h": next_h, "next_c": next_c}


def AttentionLSTM__forward(ns, inputs):
    return {"hn": _layer(ns, "AttentionLSTM", inputs)(inputs["x"], inputs["A"])}


def AttentionLSTM__gradients(ns, inputs):
    layer = _layer(ns, "AttentionLSTM", inputs)
    leaves = _leaves(inputs, ["x", "A"])
    out = layer(leaves["x"], leaves["A"])
    return _grads_of(out, inputs["dout"], {**leaves, **dict(layer.named_parameters())})


# ---------------------------------------------------------------------------------------
# The captioning model
# ---------------------------------------------------------------------------------------


_captioners = {}  # built once per class and settings: a RegNet is slow to build


def _captioner(ns, inputs, options):
    """The unit's CaptioningRNN with the grader's weights loaded by state_dict (strict).

    Every test loads a complete state_dict, so a model built for an earlier test of the same
    settings serves again.
    """
    key = (id(ns["CaptioningRNN"]), options["cell_type"], options["wordvec_dim"],
           options["hidden_dim"], options["ignore_index"], len(options["word_to_idx"]))
    if key not in _captioners:
        _captioners[key] = ns["CaptioningRNN"](
            options["word_to_idx"], input_dim=400, wordvec_dim=options["wordvec_dim"],
            hidden_dim=options["hidden_dim"], cell_type=options["cell_type"],
            image_encoder_pretrained=False, ignore_index=options["ignore_index"],
        ).double()
    model = _captioners[key]
    state = {k[len("state."):]: v for k, v in inputs.items() if k.startswith("state.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        # load_state_dict lists missing and unexpected names: the reason the student needs.
        raise ValueError(f"the grader's weights do not fit CaptioningRNN by name: {exc}") from None
    return model.eval()


def captioning_loss(ns, inputs, options):
    model = _captioner(ns, inputs, options)
    return {"loss": model(inputs["images"], inputs["captions"])}


def captioning_sample(ns, inputs, options):
    model = _captioner(ns, inputs, options)
    out = model.sample(inputs["images"], max_length=options["max_length"])
    if options["cell_type"] == "attn":
        captions, weights = out
        return {"captions": captions, "attn_weights": weights}
    return {"captions": out}


def runner(unit: str, test: str):
    """The runner of a test: f(namespace, inputs[, options]) -> dict of output tensors."""
    if unit == "CaptioningRNN":
        return captioning_loss if test.startswith("loss_") else captioning_sample
    return globals()[f"{unit}__{test}"]
