"""Detecting PyTorch's built-in recurrent and attention modules in code that must not use them.

Two complementary checks:

* ``find_forbidden(source)`` reads source code (no execution): it resolves imports and
  aliases (``from torch import nn``, ``import torch.nn.functional as F``) so that
  ``nn.LSTM`` is caught while a class of one's own called ``LSTM`` is not, and it flags
  names that only serve to reach the built-ins indirectly (``_VF``, ``getattr`` strings).
* ``guard()`` is a context manager that makes every forbidden entry point raise
  ``ForbiddenModuleError`` while code runs, however it was reached.
"""

from __future__ import annotations

import ast
import contextlib
import re

import torch
import torch.nn.functional as F

FORBIDDEN_CLASSES = (
    "RNNBase", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "MultiheadAttention",
    "Transformer", "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer",
    "TransformerDecoderLayer",
)
FORBIDDEN_FUNCTIONAL = ("scaled_dot_product_attention", "multi_head_attention_forward")
FORBIDDEN_TORCH_OPS = (
    "rnn_tanh", "rnn_relu", "lstm", "gru", "rnn_tanh_cell", "rnn_relu_cell", "lstm_cell",
    "gru_cell", "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell", "scaled_dot_product_attention",
)

FORBIDDEN_PATHS = frozenset(
    [f"torch.nn.{name}" for name in FORBIDDEN_CLASSES]
    + [f"torch.nn.modules.rnn.{name}" for name in FORBIDDEN_CLASSES]
    + [f"torch.nn.functional.{name}" for name in FORBIDDEN_FUNCTIONAL]
    + [f"torch.{name}" for name in FORBIDDEN_TORCH_OPS]
    + [f"torch._C._VariableFunctions.{name}" for name in FORBIDDEN_TORCH_OPS]
    + [f"torch.ops.aten.{name}" for name in FORBIDDEN_TORCH_OPS]
    + ["torch._VF", "torch.nn.modules.rnn", "torch.nn.modules.activation.MultiheadAttention"]
)
# Strings that have no use in this assignment except reaching a built-in indirectly.
SUSPICIOUS_WORDS = re.compile(
    r"\b(_VF|_VariableFunctions|scaled_dot_product_attention|MultiheadAttention|"
    r"multi_head_attention_forward|_thnn_fused_\w+|(?:LSTM|GRU|RNN)Cell)\b"
)


class ForbiddenModuleError(RuntimeError):
    """Raised when code calls a built-in recurrent or attention module inside guard()."""


def find_forbidden(source: str, filename: str = "<source>") -> list[str]:
    """Human-readable findings, one per forbidden use; [] when the source is clean.

    A source that does not parse is reported as a finding, not an exception.
    """
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as exc:
        return [f"{filename}: cannot parse ({exc.msg}, line {exc.lineno})"]

    aliases: dict[str, str] = {}  # local name -> dotted path it stands for
    findings = []

    def report(node, what):
        findings.append(f"{filename}:{getattr(node, 'lineno', '?')}: uses {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    aliases[top] = top
                if _is_forbidden(alias.name):
                    report(node, alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                path = f"{node.module}.{alias.name}"
                aliases[alias.asname or alias.name] = path
                if _is_forbidden(path):
                    report(node, path)

    for node in ast.walk(tree):
        if isinstance(node, (ast.Attribute, ast.Name)) and isinstance(getattr(node, "ctx", None), ast.Load):
            path = _dotted(node, aliases)
            if path and _is_forbidden(path):
                report(node, path)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = SUSPICIOUS_WORDS.search(node.value)
            if match:
                report(node, f'the string "{match.group(0)}"')

    # Each use is reported once, even when both a.b and a.b.c match.
    unique = list(dict.fromkeys(findings))
    return unique


def _dotted(node, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    return ".".join([aliases[node.id], *reversed(parts)])


def _is_forbidden(path: str) -> bool:
    return path in FORBIDDEN_PATHS or path.startswith("torch._VF")


def _raiser(name):
    def forbidden(*args, **kwargs):
        raise ForbiddenModuleError(f"{name} is not allowed in this assignment")
    return forbidden


@contextlib.contextmanager
def guard():
    """Within the block, constructing or calling any forbidden built-in raises."""
    patches = []  # (owner, attribute, original)

    def patch(owner, attribute, replacement):
        if hasattr(owner, attribute):
            patches.append((owner, attribute, owner.__dict__.get(attribute, _MISSING)))
            setattr(owner, attribute, replacement)

    for name in FORBIDDEN_CLASSES:
        cls = getattr(torch.nn, name, None)
        if isinstance(cls, type):
            patch(cls, "__init__", _raiser(f"torch.nn.{name}"))
            patch(cls, "forward", _raiser(f"torch.nn.{name}"))
    for name in FORBIDDEN_FUNCTIONAL:
        patch(F, name, _raiser(f"torch.nn.functional.{name}"))
    for name in FORBIDDEN_TORCH_OPS:
        patch(torch, name, _raiser(f"torch.{name}"))
        patch(torch._VF, name, _raiser(f"torch._VF.{name}"))
    try:
        yield
    finally:
        for owner, attribute, original in reversed(patches):
            if original is _MISSING:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, original)


_MISSING = object()
