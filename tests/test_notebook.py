"""The student notebook: built from its sources, runs top to bottom, and releases cleanly.

The notebooks run in a real Jupyter kernel (nbclient), offline: CAPTIONING_PRETRAINED=0
gives a random encoder, and coco.pt is the one `make data` built.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from assignment import build_notebook
from autograder import ASSIGNMENT, COURSE_DIR, NOTEBOOK_NAME, SOURCE_NOTEBOOK
from conftest import COCO_PT, REPO_ROOT, devices
from solution import source as reference

pytestmark = pytest.mark.slow  # gradings, batches or the command line: not in make test-fast

SOURCE_DIR = SOURCE_NOTEBOOK.parent
RELEASE_DIR = COURSE_DIR / "release" / ASSIGNMENT


def grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def is_check_cell(cell) -> bool:
    return cell.cell_type == "code" and "with visible_check(" in cell.source


def image_outputs(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def text_of(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.output_type == "stream")


def saved_text_of(cell) -> str:
    """Everything a saved copy of the notebook shows of cell's outputs as text: streams and
    the plain-text form of displays (what nbconvert, GitHub or a closed widget show)."""
    return text_of(cell) + "".join(out.get("data", {}).get("text/plain", "") for out in cell.get("outputs", []))


def execute(notebook_dir: Path, monkeypatch, device: str = "cpu", allow_errors: bool = False):
    """Run the notebook in notebook_dir in a fresh kernel, offline, on device.

    Returns (executed notebook, the CellExecutionError that stopped it or None).
    """
    monkeypatch.setenv("CAPTIONING_PRETRAINED", "0")
    if device == "cpu":
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    notebook = nbformat.read(notebook_dir / NOTEBOOK_NAME, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(notebook_dir)}})
    try:
        client.execute()
    except CellExecutionError as error:
        return notebook, error
    return notebook, None


def copy_notebook_dir(source: Path, destination: Path) -> Path:
    """The notebook and its helpers in a scratch folder, with the built coco.pt beside them."""
    destination.mkdir()
    for name in (NOTEBOOK_NAME, "captioning_helpers.py"):
        shutil.copy(source / name, destination / name)
    os.symlink(COCO_PT, destination / "coco.pt")
    return destination


# ---------------------------------------------------------------------------------------
# The source notebook
# ---------------------------------------------------------------------------------------


def test_committed_notebook_matches_its_sources():
    built = build_notebook.notebook_text(build_notebook.build_notebook())
    assert (SOURCE_DIR / NOTEBOOK_NAME).read_text() == built, "stale notebook: run `make notebook`"


def test_every_unit_has_one_solution_cell_with_the_reference_code():
    notebook = nbformat.read(SOURCE_DIR / NOTEBOOK_NAME, as_version=4)
    solution_cells = {grade_id(c): c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("solution")}
    assert list(solution_cells) == list(reference.graded_units())
    for unit, cell in solution_cells.items():
        assert cell.source == reference.unit_source(unit)
    points = [c.metadata.nbgrader.points for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert sum(points) == 100


def test_builder_rejects_a_source_without_a_units_cell():
    text = build_notebook.TEXT_SOURCE.read_text().replace("# %% [unit] LSTM\n", "# %%\n")
    with pytest.raises(ValueError, match="LSTM"):
        build_notebook.build_notebook(text)


@pytest.mark.parametrize("change, message", [
    (("forward = 4", "forward = 3"), "totals 99 points, not 100"),
    (("forward = 4", "forward = 4.5"), "whole number"),
    (("[rnn_step_forward]", "[rnn_step_forward"), "cannot be read"),
])
def test_make_notebook_refuses_points_the_grader_would_refuse(tmp_path, monkeypatch, capsys, change, message):
    # Without the fix `make notebook` and `make release` accepted a total of 99, and grading
    # then died with a traceback.
    points = tmp_path / "points.toml"
    points.write_text(build_notebook.POINTS_FILE.read_text().replace(*change, 1))
    monkeypatch.setattr(build_notebook, "POINTS_FILE", points)
    monkeypatch.setattr(build_notebook, "NOTEBOOK", tmp_path / "built.ipynb")  # never the real one
    for argv in ([], ["--check"]):  # make notebook, make release
        assert build_notebook.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {points}") and message in err
    assert not (tmp_path / "built.ipynb").exists()


@pytest.mark.parametrize("device", devices())
def test_instructor_notebook_runs_top_to_bottom(tmp_path, monkeypatch, device):
    notebook, error = execute(copy_notebook_dir(SOURCE_DIR, tmp_path / "nb"), monkeypatch, device)
    assert error is None, str(error)[-2000:]
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert not [o for c in code_cells for o in c.outputs if o.output_type == "error"]

    check_cells = [c for c in code_cells if is_check_cell(c)]
    assert len(check_cells) == 12
    for cell in check_cells:
        assert "PASS" in text_of(cell) and "FAIL" not in text_of(cell), cell.source[:80]
    units = len(reference.graded_units())  # the summary counts graded units, with their points
    assert f"{units} of {units} units pass every visible check" in text_of(code_cells[-1])

    def figures_of(marker):
        return sum(image_outputs(c) for c in code_cells if marker in c.source)

    assert figures_of("show_captioned_images(\n    data[") == 1, "image grid"
    assert figures_of("helpers.plot_losses(losses)") == 3, "loss curves"
    assert figures_of("helpers.show_captioned_images(images,") == 6, "sampled captions"
    assert figures_of("helpers.show_attention(") == 2, "attention maps"
    printed = "".join(text_of(c) for c in code_cells)
    for cell_type in ("rnn", "lstm", "attn"):  # the notebook's recipe, its seed, this device
        assert f"final loss ({cell_type})" in printed
        assert re.search(rf"final loss \({cell_type}\).* memorised 50 of 50 .*; targets met", printed)
    assert "| CPU threads: 1 |" in printed and "random weights (PRETRAINED_ENCODER = False)" in printed
    training = [saved_text_of(c) for c in code_cells if "helpers.train_captioner(" in c.source]
    assert len(training) == 3 and all(re.search(r"step (\d+)/\1, loss ", t) for t in training)
    assert not [t for t in training if re.search(r"\b0%|\b0/\d", t)], "a progress bar saved at 0%"


def test_a_saved_notebook_shows_trainings_final_progress_line(tmp_path):
    """Issue: saved copies of the notebook showed the progress bars as "0%| | 0/600" (a tqdm
    widget is saved as it was first displayed)."""
    cell = nbformat.v4.new_code_cell(
        "import sys, torch\n"
        f"sys.path.insert(0, {str(SOURCE_DIR)!r}); sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "import captioning_helpers as helpers\n"
        "from solution.captioning import CaptioningRNN\n"
        "vocab = {'<NULL>': 0, '<START>': 1, '<END>': 2, 'a': 3, 'cat': 4}\n"
        "model = CaptioningRNN(vocab, wordvec_dim=4, hidden_dim=4, image_encoder_pretrained=False)\n"
        "captions = torch.tensor([[1, 3, 4, 2], [1, 4, 2, 0], [1, 3, 2, 0]])\n"
        "helpers.train_captioner(model, torch.rand(3, 400, 4, 4), captions, epochs=300, batch_size=1,\n"
        "                        lr=1e-2, device=torch.device('cpu'), desc='tiny');")
    notebook = nbformat.v4.new_notebook(cells=[cell])
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    path = tmp_path / "saved.ipynb"
    nbformat.write(notebook, path)
    saved = saved_text_of(nbformat.read(path, as_version=4).cells[0])
    assert re.search(r"tiny: step 900/900, loss \d+\.\d+, \d+\.\d s", saved), saved
    assert not re.search(r"\b0%|\b0/900", saved), saved


# ---------------------------------------------------------------------------------------
# The release
# ---------------------------------------------------------------------------------------


def release_digests() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(RELEASE_DIR.iterdir())}


@pytest.fixture(scope="module")
def released():
    """`make release`, as an instructor runs it; returns the digests of what it wrote."""
    subprocess.run(["make", "-C", str(REPO_ROOT), "release", f"PYTHON={sys.executable}"],
                   check=True, capture_output=True, text=True)
    return release_digests()


def test_release_contains_the_notebook_helpers_and_data(released):
    assert set(released) == {NOTEBOOK_NAME, "captioning_helpers.py", "coco.pt"}


def test_release_is_idempotent(released):
    subprocess.run(["make", "-C", str(REPO_ROOT), "release"], check=True, capture_output=True)
    assert release_digests() == released


def test_release_leaks_no_reference_code_and_has_no_outputs(released):
    notebook = nbformat.read(RELEASE_DIR / NOTEBOOK_NAME, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in notebook.cells if c.cell_type == "code")

    # Lines made only of keywords and punctuation (`else:`) say nothing about the solution.
    def telling(line):
        return any(ch.isalnum() for ch in line.replace("else", "").replace("return", ""))

    secret = {line for line in reference.solution_lines(reference.read_source()) if telling(line)}
    assert len(secret) > 80
    for path in RELEASE_DIR.iterdir():
        if path.suffix in (".py", ".ipynb"):
            released_lines = set()
            for line in path.read_text().splitlines():
                released_lines.add(line.strip())
                released_lines.add(line.strip().strip('",').replace('\\n', '').strip())
            leaked = secret & released_lines
            assert not leaked, f"{path.name} contains reference lines: {sorted(leaked)[:5]}"
    assert "BEGIN SOLUTION" not in (RELEASE_DIR / NOTEBOOK_NAME).read_text()
    assert "HIDDEN TESTS" not in (RELEASE_DIR / NOTEBOOK_NAME).read_text()


def test_every_released_unit_is_a_stub(released):
    notebook = nbformat.read(RELEASE_DIR / NOTEBOOK_NAME, as_version=4)
    for unit in reference.graded_units():
        (cell,) = [c for c in notebook.cells if grade_id(c) == unit]
        regions = reference.unit_source(unit).count(reference.BEGIN_SOLUTION)
        assert regions >= 1 and cell.source.count(reference.STUB) == regions


def test_released_notebook_stops_at_the_first_stub(released, tmp_path, monkeypatch):
    notebook, error = execute(copy_notebook_dir(RELEASE_DIR, tmp_path / "student"), monkeypatch)
    assert error is not None and error.ename == "NotImplementedError"
    executed = [c for c in notebook.cells if c.cell_type == "code" and c.get("execution_count")]
    # Everything before the first check ran; the first check is where it stopped.
    assert is_check_cell(executed[-1]) and 'visible_check("rnn_step_forward")' in executed[-1].source
    assert not any(o.output_type == "error" for c in executed[:-1] for o in c.outputs)


def _fill_stubs(notebook_dir: Path, replacement: str):
    """Replace every stub of the released notebook with replacement (same indentation)."""
    path = notebook_dir / NOTEBOOK_NAME
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = cell.source.replace(reference.STUB, replacement)
    nbformat.write(notebook, path)


@pytest.mark.parametrize("wrong_unit", [
    "pass",  # outputs stay None, as initialised above the stub
    "raise ValueError('a bug in the student code')",
])
def test_visible_checks_report_failure_on_wrong_units(released, tmp_path, monkeypatch, wrong_unit):
    notebook_dir = copy_notebook_dir(RELEASE_DIR, tmp_path / "student")
    _fill_stubs(notebook_dir, wrong_unit)
    notebook, _ = execute(notebook_dir, monkeypatch, allow_errors=True)
    check_cells = [c for c in notebook.cells if is_check_cell(c)]
    assert len(check_cells) == 12
    for cell in check_cells:
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source[:80]
        assert "FAIL" in text_of(cell), cell.source[:80]
    assert f"0 of {len(reference.graded_units())} units pass" in text_of(notebook.cells[-1])
