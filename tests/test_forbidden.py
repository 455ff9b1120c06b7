"""The reference solution uses no built-in recurrent or attention module, checked both by
reading its source and by running it with those modules made to raise."""

from pathlib import Path

import pytest
import torch

from autograder.forbidden import ForbiddenModuleError, find_forbidden, guard
from solution.captioning import CELL_TYPES, CaptioningRNN

SOLUTION_DIR = Path(__file__).resolve().parent.parent / "solution"


def test_no_forbidden_module_in_any_solution_file():
    files = sorted(SOLUTION_DIR.rglob("*.py"))
    assert files, "solution/ holds no Python file"
    findings = [f for path in files for f in find_forbidden(path.read_text(), str(path))]
    assert findings == []


@pytest.mark.parametrize("snippet, what", [
    ("import torch\nlayer = torch.nn.LSTM(3, 4)", "torch.nn.LSTM"),
    ("from torch import nn\nnn.GRUCell(2, 2)", "torch.nn.GRUCell"),
    ("import torch.nn as tnn\ntnn.RNN(2, 2)", "torch.nn.RNN"),
    ("from torch.nn import LSTM as Mine\nMine(2, 2)", "torch.nn.LSTM"),
    ("import torch.nn.functional as F\nF.scaled_dot_product_attention(q, k, v)",
     "torch.nn.functional.scaled_dot_product_attention"),
    ("from torch.nn import MultiheadAttention", "torch.nn.MultiheadAttention"),
    ("import torch\ntorch._VF.lstm(x, hx, params)", "torch._VF"),
    ("import torch\ntorch.lstm_cell(x, hx, w1, w2)", "torch.lstm_cell"),
    ("import torch\nf = getattr(torch.nn, 'LSTMCell')", '"LSTMCell"'),
])
def test_checker_catches_forbidden_uses(snippet, what):
    findings = find_forbidden(snippet)
    assert any(what in f for f in findings), findings


def test_checker_allows_own_classes_with_the_same_names():
    source = "import torch\nclass LSTM(torch.nn.Module):\n    pass\nlayer = LSTM()\nrnn = RNN(3, 4)\n"
    assert find_forbidden(source) == []


def test_checker_reports_unparsable_source():
    assert "cannot parse" in find_forbidden("def broken(:\n")[0]


def test_guard_blocks_builtins_and_restores_them():
    x = torch.randn(1, 2, 3)
    with guard():
        with pytest.raises(ForbiddenModuleError):
            torch.nn.LSTM(3, 4)
        with pytest.raises(ForbiddenModuleError):
            torch.nn.functional.scaled_dot_product_attention(x, x, x)
        with pytest.raises(ForbiddenModuleError):
            torch._VF.lstm_cell(x[0], (x[0], x[0]), x[0], x[0])
        with pytest.raises(ForbiddenModuleError):  # built at run time: only the guard sees it
            getattr(torch.nn, "LSTM" + "Cell")(3, 4)
    torch.nn.LSTM(3, 4)(x)  # restored
    torch.nn.functional.scaled_dot_product_attention(x, x, x)


@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_reference_model_runs_with_builtins_blocked(cell_type):
    vocab = {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3, "a": 4}
    images = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8)
    captions = torch.tensor([[1, 4, 4, 2, 0], [1, 4, 2, 0, 0]])
    with guard():
        model = CaptioningRNN(vocab, hidden_dim=8, wordvec_dim=6, cell_type=cell_type,
                              image_encoder_pretrained=False, ignore_index=0)
        model(images, captions).backward()
        model.sample(images, max_length=3)
