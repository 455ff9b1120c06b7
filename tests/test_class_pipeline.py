"""A class never loses a grade: `make autograde` and `make feedback` give every student a row
in class_results.csv and grades.csv and a feedback file, whatever the submissions contain.

One class, graded once (module fixture), then checked from every side. Its students, in the
order nbgrader processes them (a student after a culprit must not go missing):

    alice  the reference, rnn_captioning.ipynb
    bob    not JSON at all
    carol  the reference renamed my_work.ipynb, beside .ipynb_checkpoints/ holding stubs
    dan    the LSTM cell pasted twice (Jupyter's copy-paste keeps the grade_id): the first is
           the reference, the second a stub; the first counts, in the kit and in nbgrader
    dave   an empty folder
    dora   the reference with schema_version 99 in a cell's nbgrader metadata
    erin   NOT GRADED in the first run (the grader failed, not her); her cells do not parse,
           so that the second run, which must grade her again, is quick

First run: the batch in this process (grade.grade patched: erin gets NOT GRADED, and a
notebook whose cells were already graded gets that result again, so that only alice's is
graded for real), then `nbgrader autograde` and `export` exactly as the Makefile runs them.
Second run: `make autograde` and `make feedback` themselves.

How these were shown to fail without the fix (the kit's files at the commit before it,
these tests unchanged): the batch has no NOT GRADED (erin is graded, no `status` column);
`nbgrader autograde` on submitted/ stops at dora (SchemaTooNewError) and fails bob, carol,
dan (DeduplicateIds then SchemaTooOldError) and dave; `make autograde` exits 2 before
`nbgrader export`, so there is no grades.csv; dan's autograded notebook keeps his SECOND
LSTM cell (nbgrader's DeduplicateIds keeps the last).
"""

import copy
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder import batch, grade
from autograder.submission import SubmissionError, read_solution_cells
from conftest import COCO_PT, REPO_ROOT
from grading import write_submission
from solution import source as reference

pytestmark = pytest.mark.slow  # gradings, batches or the command line: not in make test-fast

ASSIGNMENT = batch.ASSIGNMENT
NOTEBOOK = batch.NOTEBOOK
SECRET = "class pipeline tests"
STUDENTS = ["alice", "bob", "carol", "dan", "dave", "dora", "erin"]


def stubs() -> dict[str, str]:
    return {u: reference.strip_solutions(reference.unit_source(u)) for u in reference.graded_units()}


def folder(course: Path, student: str) -> Path:
    path = course / "submitted" / student / ASSIGNMENT
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_class(course: Path) -> None:
    write_submission(folder(course, "alice") / NOTEBOOK)
    (folder(course, "bob") / NOTEBOOK).write_text('{"cells": [oops')
    write_submission(folder(course, "carol") / "my_work.ipynb")
    write_submission(folder(course, "carol") / ".ipynb_checkpoints" / "rnn_captioning-checkpoint.ipynb", stubs())

    dan = nbformat.read(write_submission(folder(course, "dan") / NOTEBOOK), as_version=4)
    at = next(i for i, c in enumerate(dan.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "LSTM")
    pasted = copy.deepcopy(dan.cells[at])
    pasted.id = "pasted-lstm"
    pasted.source = stubs()["LSTM"]
    dan.cells.insert(at + 1, pasted)
    nbformat.write(dan, folder(course, "dan") / NOTEBOOK)

    folder(course, "dave")
    dora = nbformat.read(write_submission(folder(course, "dora") / NOTEBOOK), as_version=4)
    next(c for c in dora.cells if "nbgrader" in c.metadata).metadata.nbgrader["schema_version"] = 99
    nbformat.write(dora, folder(course, "dora") / NOTEBOOK)
    write_submission(folder(course, "erin") / NOTEBOOK, {u: "def (:\n" for u in reference.graded_units()})


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CAPTIONING_GRADER_SECRET": SECRET,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def make(course: Path, *targets: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO_ROOT), *targets,
                           f"COURSE={course}"], env=environment(), capture_output=True,
                          text=True, timeout=1200)


def nbgrader(course: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nbgrader", *args, "--log-level=WARN"], cwd=course,
                          env=environment(), capture_output=True, text=True, timeout=900)


def snapshot(course: Path) -> dict:
    """What an instructor gets: the two CSV files, each student's autograded notebook (what
    the feedback shows) and feedback file."""
    def rows(name):
        with open(course / name) as f:
            return {row.get("student_id") or row["student"]: row for row in csv.DictReader(f)}

    def text(path):
        return path.read_text() if path.is_file() else None

    return {"class": rows(batch.CLASS_CSV), "grades": rows("grades.csv"),
            "autograded": {s: text(course / "autograded" / s / ASSIGNMENT / NOTEBOOK) for s in STUDENTS},
            "feedback": {s: text(course / "feedback" / s / ASSIGNMENT / f"{ASSIGNMENT}.html") for s in STUDENTS}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    course = tmp_path_factory.mktemp("class")
    shutil.copy(REPO_ROOT / "assignment" / "nbgrader_config.py", course)
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    for name in (NOTEBOOK, "captioning_helpers.py"):
        shutil.copy(REPO_ROOT / "assignment" / "source" / ASSIGNMENT / name, course / "source" / ASSIGNMENT)
    make_class(course)
    released = make(course, "release")
    assert released.returncode == 0, released.stderr[-3000:]

    # First run: the batch here, with erin NOT GRADED.
    real, graded = grade.grade, {}

    def patched(notebook, **kwargs):
        if "/erin/" in str(notebook):
            result = batch.not_graded("the sandbox died twice (a test's stand-in)", {"test": True})
            result.mode = "bwrap"
            return result
        try:
            cells, notes = read_solution_cells(notebook, grade.UNITS)
        except SubmissionError:
            return real(notebook, **kwargs)
        seen = json.dumps(cells, sort_keys=True)
        if seen not in graded:
            graded[seen] = real(notebook, **kwargs)
        result = copy.deepcopy(graded[seen])
        result.notes = notes
        return result

    saved_secret = os.environ.get("CAPTIONING_GRADER_SECRET")
    os.environ["CAPTIONING_GRADER_SECRET"] = SECRET
    grade.grade = patched
    try:
        first = batch.grade_class(course, jobs=0, data=COCO_PT, progress=False)
    finally:
        grade.grade = real
        if saved_secret is None:
            del os.environ["CAPTIONING_GRADER_SECRET"]
        else:
            os.environ["CAPTIONING_GRADER_SECRET"] = saved_secret
    assert len(graded) == 1  # alice's cells, graded once for carol, dan and dora too
    assert sorted(first) == STUDENTS
    # nbgrader, as `make autograde` runs it.
    autograded = nbgrader(course, "autograde", ASSIGNMENT, "--force",
                          "--CourseDirectory.submitted_directory=grader_results/nbgrader_input")
    exported = nbgrader(course, "export", "--to", "grades.csv")
    for done in (autograded, exported):
        assert done.returncode == 0, done.stderr[-3000:]
    one = snapshot(course)

    # Second run: the Makefile's own targets.
    second = make(course, "autograde")
    feedback = make(course, "feedback")
    return {"first": one, "second": {**snapshot(course), "make": second, "make_feedback": feedback}}


def test_every_student_is_in_class_results_with_a_status_and_a_reason(runs):
    rows = runs["first"]["class"]
    assert sorted(rows) == STUDENTS
    scores = {s: (r["status"], r["score"]) for s, r in rows.items()}
    assert scores == {"alice": ("graded", "100"), "bob": ("graded", "0"), "carol": ("graded", "100"),
                      "dan": ("graded", "100"), "dave": ("graded", "0"), "dora": ("graded", "100"),
                      "erin": (grade.NOT_GRADED, "")}
    assert "not a Jupyter notebook" in rows["bob"]["notes"]
    assert "graded my_work.ipynb" in rows["carol"]["notes"]
    assert "LSTM: more than one cell has this grade_id; the first one counts" in rows["dan"]["notes"]
    assert "no notebook" in rows["dave"]["notes"]
    assert "sandbox died twice" in rows["erin"]["notes"]


def test_nbgrader_records_every_student_and_never_a_score_for_not_graded(runs):
    grades = runs["first"]["grades"]
    assert sorted(grades) == STUDENTS  # the student after each culprit is there too
    scores = {s: (r["status"], r["score"]) for s, r in grades.items()}
    assert scores == {"alice": ("graded", "100.0"), "bob": ("graded", "0.0"), "carol": ("graded", "100.0"),
                      "dan": ("graded", "100.0"), "dave": ("graded", "0.0"), "dora": ("graded", "100.0"),
                      "erin": (grade.NOT_GRADED, "")}


def test_not_graded_has_its_own_text_in_the_feedback(runs):
    erin = nbformat.reads(runs["first"]["autograded"]["erin"], as_version=4)
    grade_cells = [c for c in erin.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert grade_cells and all(c.outputs[0].text.startswith("NOT GRADED: the sandbox died twice")
                               for c in grade_cells)
    assert "No score was recorded" in erin.cells[0].source


def test_nbgrader_keeps_the_cell_the_kit_grades_when_a_grade_id_is_duplicated(runs):
    dan = nbformat.reads(runs["first"]["autograded"]["dan"], as_version=4)
    cells = [c for c in dan.cells if "LSTM" in c.source and c.cell_type == "code"]
    counted = [c for c in cells if c.metadata.get("nbgrader", {}).get("grade_id") == "LSTM"]
    assert len(counted) == 1 and counted[0].source == reference.unit_source("LSTM")
    pasted = [c for c in cells if c.source.startswith("# NOT GRADED: a cell above has the same grade_id (LSTM)")]
    assert len(pasted) == 1 and "raise NotImplementedError()" in pasted[0].source


def test_make_autograde_grades_not_graded_again_and_exports_everyone(runs):
    second = runs["second"]
    assert second["make"].returncode == 0, second["make"].stderr[-3000:]
    assert "1 to grade" in second["make"].stderr  # erin only: NOT GRADED is never reused
    assert second["class"]["erin"]["status"] == "graded" and second["class"]["erin"]["score"] == "0"
    assert sorted(second["grades"]) == STUDENTS
    assert {s: r["score"] for s, r in second["grades"].items()} == {
        "alice": "100.0", "bob": "0.0", "carol": "100.0", "dan": "100.0", "dave": "0.0",
        "dora": "100.0", "erin": "0.0"}


def test_make_feedback_gives_every_student_a_file_saying_what_happened(runs):
    second = runs["second"]
    assert second["make_feedback"].returncode == 0, second["make_feedback"].stderr[-3000:]
    feedback = second["feedback"]
    assert all(feedback[s] for s in STUDENTS), [s for s in STUDENTS if not feedback[s]]
    assert "not a Jupyter notebook" in feedback["bob"]
    assert "graded my_work.ipynb" in feedback["carol"]
    assert "no notebook" in feedback["dave"]
    assert "the first one counts" in feedback["dan"]
    assert "syntax error" in feedback["erin"]
