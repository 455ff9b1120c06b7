"""The notebook's overfitting targets: stated in its markdown, met by the reference.

Issue: with the notebook's old recipe (300 epochs) a correct LSTM ended at a loss of 2.7 and
got captions of its own training images wrong, and its section stated no target. The recipe
and the targets are declared once, in captioning_helpers.py (OVERFIT_RECIPE,
OVERFIT_TARGETS); the notebook trains with that recipe and its markdown states those targets.
"""

import re
import sys

import nbformat
import pytest
import torch

from assignment import build_notebook
from autograder import SOURCE_NOTEBOOK
from solution.captioning import CELL_TYPES, CaptioningRNN

sys.path.insert(0, str(SOURCE_NOTEBOOK.parent))
import captioning_helpers as helpers  # noqa: E402

SECTION = {"rnn": "RNN", "lstm": "LSTM", "attn": "attention"}  # as the notebook's markdown says


def test_the_notebook_states_each_declared_target_and_trains_with_the_declared_recipe():
    notebook = nbformat.read(SOURCE_NOTEBOOK, as_version=4)
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    for cell_type in CELL_TYPES:
        target = helpers.OVERFIT_TARGETS[cell_type]
        stated = re.search(rf"\*\*Target \({SECTION[cell_type]}\):\*\*(.*?)(?:\n\n|$)", markdown, re.S)
        assert stated, f"no target stated for {cell_type}"
        text = " ".join(stated.group(1).split())
        assert f"below {target}" in text and "50 captions" in text, text
        assert f'helpers.report_overfit("{cell_type}", ' in code
    assert code.count("**TRAINING)") == 3 and "TRAINING = dict(helpers.OVERFIT_RECIPE, device=device)" in code
    assert "small_images, small_captions = helpers.overfit_slice(data)" in code
    assert helpers.OVERFIT_EXAMPLES == 50


def test_the_built_markdown_takes_the_targets_from_the_declaration(monkeypatch):
    module = build_notebook.shipped_helpers()
    monkeypatch.setattr(build_notebook, "shipped_helpers", lambda: module)
    monkeypatch.setitem(module.OVERFIT_TARGETS, "lstm", 0.123)
    assert "below 0.123" in build_notebook.with_targets("a final loss below OVERFIT_TARGETS[lstm].")


@pytest.fixture(scope="module")
def data():
    return helpers.load_coco(str(build_notebook.REPO_ROOT / "data" / "coco.pt"))


@pytest.mark.slow
@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_the_reference_memorises_the_slice_with_the_notebooks_recipe(data, cell_type, seed=1):
    """As the notebook does it, on the CPU, with the random encoder (this machine is offline),
    but from another seed, which also draws another encoder: the notebook's own seed (0) is
    checked by test_notebook.py's run of the notebook. (Seeds 0-2 of each cell type, with
    the seconds they take: `make bench-train`.)"""
    threads = torch.get_num_threads()
    helpers.limit_threads()
    try:
        images, captions = helpers.overfit_slice(data)
        torch.manual_seed(seed)
        model = CaptioningRNN(data["vocab"]["token_to_idx"], cell_type=cell_type, ignore_index=0,
                              image_encoder_pretrained=False)
        helpers.train_captioner(model, images, captions, device=torch.device("cpu"), **helpers.OVERFIT_RECIPE)
        loss, memorised = helpers.overfit_result(model, images, captions)
    finally:
        torch.set_num_threads(threads)
    assert memorised == len(captions) == helpers.OVERFIT_EXAMPLES
    assert loss < helpers.OVERFIT_TARGETS[cell_type]
