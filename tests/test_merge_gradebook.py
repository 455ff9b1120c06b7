"""merge builds nbgrader's gradebook and grades.csv from stored results, for a course
directory outside the repository (as on a Kubernetes volume at /course), with the kit's own
nbgrader_config.py copied there unchanged.

Without the fix the nbgrader it starts could not import autograder (the config finds it
beside the course only) and silently fell back to its stock configuration: it executed the
notebooks itself, and bo got 100 instead of his stored 97 (seen by running this test).
"""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import __main__ as cli
from autograder import batch, checks, grade
from conftest import COCO_PT, REPO_ROOT
from grading import write_submission
from solution import source as reference

pytestmark = pytest.mark.slow  # nbgrader: not in make test-fast

SOURCE = REPO_ROOT / "assignment" / "source" / batch.ASSIGNMENT


def release(course: Path) -> None:
    """The course set up as `make release` does, the config copied as it is."""
    (course / "source" / batch.ASSIGNMENT).mkdir(parents=True)
    for name in (batch.NOTEBOOK, "captioning_helpers.py"):
        shutil.copy(SOURCE / name, course / "source" / batch.ASSIGNMENT / name)
    shutil.copy(COCO_PT, course / "source" / batch.ASSIGNMENT / "coco.pt")
    shutil.copy(REPO_ROOT / "assignment" / "nbgrader_config.py", course / "nbgrader_config.py")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT),  # the instructor's set-up, not merge's
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", batch.ASSIGNMENT, "--force"],
                   cwd=course, env=env, check=True, capture_output=True, timeout=600)


def test_merge_fills_the_gradebook_of_a_course_outside_the_repository(tmp_path, monkeypatch):
    course = tmp_path / "course"
    release(course)
    for student in ("amy", "bo"):
        write_submission(course / "submitted" / student / f"{batch.ASSIGNMENT}/{batch.NOTEBOOK}")
    points = checks.load_points()
    monkeypatch.setenv("CAPTIONING_GRADER_SECRET", "gradebook test")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    lost = {"amy": 0, "bo": 3}

    def fake_grade(notebook, **kwargs):  # stored as a shard would store it; nothing runs
        tests = [grade.TestResult(u, t, p, p) for u, ts in points.items() for t, p in ts.items()]
        tests[0].score -= lost[Path(notebook).parts[-3]]
        return grade.GradeResult(tests, [], "bwrap", "cpu")

    monkeypatch.setattr(grade, "grade", fake_grade)
    assert cli.main(["batch", str(course), "--jobs", "0", "--shard", "0/1", "--data", str(COCO_PT)]) == 0
    monkeypatch.setattr(grade, "grade", None)  # merge must not grade
    assert cli.main(["merge", str(course), "--data", str(COCO_PT)]) == 0
    with open(course / "grades.csv") as f:
        rows = {row["student_id"]: row for row in csv.DictReader(f)}
    assert {s: float(r["score"]) for s, r in rows.items()} == {"amy": 100.0, "bo": 97.0}
    assert (course / "gradebook.db").is_file()


def test_nbgrader_without_the_kit_refuses_to_autograde_rather_than_run_student_code(tmp_path):
    """nbgrader ignores a configuration file that raises: when the kit's config could not
    import autograder, nbgrader's stock autograde ran every submitted notebook in a kernel,
    unsandboxed (the test above met it as a wrong score)."""
    course = tmp_path / "course"
    release(course)
    marker = tmp_path / "student code ran"
    cell = f"open({str(marker)!r}, 'w').close()\n" + reference.unit_source("rnn_step_forward")
    write_submission(course / "submitted" / "eve" / batch.ASSIGNMENT / batch.NOTEBOOK, {"rnn_step_forward": cell})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", batch.ASSIGNMENT, "--force"],
                          cwd=course, env=env, capture_output=True, text=True, timeout=900)
    assert not marker.exists(), "nbgrader executed the student's notebook"
    assert "the kit's grader cannot be imported here" in done.stdout + done.stderr, done.stderr[-2000:]
