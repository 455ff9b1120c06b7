"""nbgrader's own commands over a small class: autograde, export, feedback."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import ASSIGNMENT, COURSE_DIR
from conftest import REPO_ROOT
from grading import write_submission
from solution import source as reference

pytestmark = pytest.mark.slow  # gradings, batches or the command line: not in make test-fast

COURSE = COURSE_DIR


def nbgrader(course: Path, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CAPTIONING_GRADER_SECRET": "nbgrader test",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "nbgrader", *args, "--log-level=WARN"], cwd=course,
                          env=env, check=True, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """A course copy with two submissions, autograded and with feedback generated."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(COURSE / "nbgrader_config.py", course)
    source = course / "source" / ASSIGNMENT
    source.mkdir(parents=True)
    for name in (f"{ASSIGNMENT}.ipynb", "captioning_helpers.py"):
        shutil.copy(COURSE / "source" / ASSIGNMENT / name, source)
    nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")
    released = course / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"

    submitted = course / "submitted"
    # alice: the reference. bob: the release with only rnn_step_forward written (his way).
    write_submission(submitted / "alice" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    bob_code = reference.strip_solutions(reference.unit_source("rnn_step_forward")).replace(
        "raise NotImplementedError()", "next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)\n    cache = None")
    write_submission(submitted / "bob" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb",
                     {"rnn_step_forward": bob_code}, notebook=released)
    nbgrader(course, "autograde", ASSIGNMENT, "--force")
    nbgrader(course, "export", "--to", "grades.csv")
    nbgrader(course, "generate_feedback", ASSIGNMENT, "--force")
    return course


def test_grades_csv_has_each_students_score(graded_class):
    with open(graded_class / "grades.csv") as f:
        scores = {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)}
    assert scores == {"alice": 100.0, "bob": 4.0}


def test_feedback_explains_lost_points_without_revealing_the_reference(graded_class):
    html = (graded_class / "feedback" / "bob" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    assert "forward: 4/4" in html
    assert "NotImplementedError (not written yet)" in html
    secret = [line for line in reference.solution_lines(reference.read_source()) if len(line) > 20]
    assert not [line for line in secret if line in html]


def test_nbgrader_sees_the_cells_the_kit_reads(tmp_path):
    """nbgrader's copy of a submission is built from what the kit reads (plain JSON, lines
    joined): its solution cells are the submission's, not a stub saying nothing could be read."""
    from types import SimpleNamespace

    import nbformat

    from autograder import nbgrader_autograde
    from grading import INSTRUCTOR_NOTEBOOK

    path = write_submission(tmp_path / "s.ipynb", {"rnn_forward": "# mine\nx = 1\n"})
    source = nbformat.read(INSTRUCTOR_NOTEBOOK, as_version=4)
    copy = nbgrader_autograde.nbgrader_copy(SimpleNamespace(notebook=path, note=""), source)
    by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in copy.cells}
    assert by_id["rnn_forward"] == "# mine\nx = 1\n"
    assert "def lstm_gates" in by_id["LSTM"]  # the instructor's, untouched
    assert "could be graded" not in copy.cells[0].source and "cannot process" not in copy.cells[0].source
