"""The Gradescope autograder zip, run in a fake /autograder layout."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from autograder import batch, gradescope
from conftest import COCO_PT
from grading import write_submission
from solution import source as reference

pytestmark = pytest.mark.slow  # gradings, batches or the command line: not in make test-fast


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


def run_autograder(root, notebook_writer, python=sys.executable, status=0):
    """Put one submission in place, run run_autograder, return results.json."""
    submission = root / "submission"
    shutil.rmtree(submission, ignore_errors=True)
    shutil.rmtree(root / "results", ignore_errors=True)
    submission.mkdir()
    notebook_writer(submission)
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": str(python)}
    done = subprocess.run([str(root / "source" / "run_autograder")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == status, done.stderr[-2000:]
    results = root / "results" / "results.json"
    return json.loads(results.read_text()) if results.exists() else None


def test_zip_holds_the_grader_not_the_repositorys_tests(autograder_root):
    names = {p.relative_to(autograder_root / "source").as_posix()
             for p in (autograder_root / "source").rglob("*") if p.is_file()}
    assert "solution/captioning.py" in names and "data/coco.pt" in names
    assert not [n for n in names if n.startswith(("tests/", "assignment/"))]
    # Every file the batch's cache key covers (one list, by glob): the hand-kept list this
    # replaced had already missed submission_sandbox.py once.
    assert set(batch.grader_files()) <= names
    assert set(gradescope.SOURCE_FILES) == set(batch.grader_files()) | {"requirements.txt", "requirements.lock"}


def test_correct_submission_scores_100(autograder_root):
    results = run_autograder(autograder_root, lambda d: write_submission(d / "rnn_captioning.ipynb"))
    assert results["score"] == 100 and results["max_score"] == 100


def test_a_renamed_notebook_is_graded_not_its_checkpoint_and_the_output_says_which(autograder_root):
    # Without the fix the checkpoint (stubs) was graded: 0/100, and nothing said which file.
    broken = {"LSTM": reference.strip_solutions(reference.unit_source("LSTM"))}
    stubs = {u: reference.strip_solutions(reference.unit_source(u)) for u in reference.graded_units()}

    def submit(folder):
        write_submission(folder / "my_work.ipynb", broken)  # renamed by the student
        write_submission(folder / ".ipynb_checkpoints" / "my_work-checkpoint.ipynb", stubs)

    results = run_autograder(autograder_root, submit)
    assert results["score"] == 100 - 16
    assert "graded my_work.ipynb" in results["output"]
    lstm = [t for t in results["tests"] if t["name"].startswith("LSTM:")]
    assert lstm and all(t["score"] == 0 and "NotImplementedError" in t["output"] for t in lstm)


def test_no_notebook_to_grade_scores_0_saying_what_was_found(autograder_root):
    results = run_autograder(autograder_root, lambda d: None)
    assert results["score"] == 0 and "no notebook (rnn_captioning.ipynb)" in results["output"]

    def two(folder):
        (folder / "a.ipynb").write_text("{}")
        (folder / "b.ipynb").write_text("{}")

    results = run_autograder(autograder_root, two)
    assert results["score"] == 0 and "2 other notebooks (a.ipynb, b.ipynb)" in results["output"]


def test_not_graded_leaves_no_score_for_gradescope(autograder_root, tmp_path):
    # A stand-in for the grader that writes a results.json and exits 3 (NOT GRADED):
    # Gradescope must not take that file's 0 as the score.
    python = tmp_path / "python"
    python.write_text('#!/usr/bin/env bash\nfor a in "$@"; do [ "$prev" = --results ] && out="$a"; prev="$a"; done\n'
                      'echo \'{"score": 0, "tests": []}\' > "$out"\necho "NOT GRADED: a stand-in"\nexit 3\n')
    python.chmod(0o755)
    assert run_autograder(autograder_root, lambda d: None, python=python, status=3) is None
    assert (autograder_root / "results" / "not_graded.json").is_file()
