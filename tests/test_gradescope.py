"""The Gradescope autograder zip, run in a fake /autograder layout."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

from autograder import gradescope
from conftest import COCO_PT
from grading import write_submission
from solution import source as reference


@pytest.fixture(scope="module")
def autograder_root(tmp_path_factory):
    """The zip built as `make gradescope` does, unpacked where Gradescope unpacks it."""
    root = tmp_path_factory.mktemp("autograder")
    archive = gradescope.build_zip(root / "autograder.zip", COCO_PT)
    with zipfile.ZipFile(archive) as z:
        z.extractall(root / "source")
        assert {"setup.sh", "run_autograder"} <= set(z.namelist())
    for name in ("run_autograder", "setup.sh"):
        os.chmod(root / "source" / name, 0o755)
    return root


def run_autograder(root, notebook_writer):
    """Put one submission in place, run run_autograder, return results.json."""
    submission = root / "submission"
    if submission.exists():
        for path in submission.iterdir():
            path.unlink()
    submission.mkdir(exist_ok=True)
    notebook_writer(submission)
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable}
    done = subprocess.run([str(root / "source" / "run_autograder")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((root / "results" / "results.json").read_text())


def test_zip_holds_the_grader_not_the_repositorys_tests(autograder_root):
    names = {p.relative_to(autograder_root / "source").as_posix()
             for p in (autograder_root / "source").rglob("*") if p.is_file()}
    assert "solution/captioning.py" in names and "data/coco.pt" in names
    assert not [n for n in names if n.startswith(("tests/", "assignment/"))]


def test_correct_submission_scores_100(autograder_root):
    results = run_autograder(autograder_root, lambda d: write_submission(d / "rnn_captioning.ipynb"))
    assert results["score"] == 100 and results["max_score"] == 100


def test_broken_submission_gets_a_result_with_reasons(autograder_root):
    broken = {"LSTM": reference.strip_solutions(reference.unit_source("LSTM"))}
    # Renamed by the student: still found and graded.
    results = run_autograder(autograder_root, lambda d: write_submission(d / "my_work.ipynb", broken))
    assert results["score"] == 100 - 16
    lstm = [t for t in results["tests"] if t["name"].startswith("LSTM:")]
    assert lstm and all(t["score"] == 0 and "NotImplementedError" in t["output"] for t in lstm)


def test_empty_submission_scores_0(autograder_root):
    results = run_autograder(autograder_root, lambda d: None)
    assert results["score"] == 0 and "cannot read" in results["output"]
