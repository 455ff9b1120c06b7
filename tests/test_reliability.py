"""A failure the student did not cause is retried, then NOT GRADED; never a score.

Faults are injected into the grader's own machinery (a sandbox stopped by the grader, one
that never reports), and a unit that kills its own sandbox stands for the student's fault.
"""

import tempfile

import pytest

from autograder import grade, reports, sandbox, submission_sandbox
from grading import INSTRUCTOR_NOTEBOOK, all_tests_of, failures, grade_notebook, lost, write_submission
from solution import source as reference

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sandbox.sandbox_status()[0], reason="needs bwrap: these test the sandboxes")]


def test_a_sandbox_that_never_reports_makes_the_submission_not_graded(monkeypatch):
    monkeypatch.setattr(submission_sandbox, "STARTUP_SECONDS", 0.01)  # every sandbox looks wedged at once
    result = grade_notebook(INSTRUCTOR_NOTEBOOK)
    assert result.status == grade.NOT_GRADED and result.score == 0
    assert any(n.startswith("NOT GRADED") for n in result.notes)
    assert all(t.reason == "NOT GRADED" for t in result.tests)
    assert result.diagnostics and all("stderr_tail" in d for d in result.diagnostics.values())
    assert "NOT GRADED" in reports.table(result)
    assert reports.results_json(result)["extra_data"]["status"] == "not graded"


def test_a_sandbox_lost_once_is_graded_again_with_the_same_score(monkeypatch):
    """Without the retry in grade.run_units every point is lost."""
    original, stopped = submission_sandbox.SubmissionSandbox.__init__, []

    def stopped_once(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if not stopped:
            stopped.append(self)
            self._cancel.set()  # as if the machine had killed it

    monkeypatch.setattr(submission_sandbox.SubmissionSandbox, "__init__", stopped_once)
    result = grade_notebook(INSTRUCTOR_NOTEBOOK)
    assert stopped and result.status == "graded"
    assert result.score == 100, failures(result)
    assert "sandbox 1" in result.diagnostics


def test_a_unit_that_kills_its_sandbox_loses_only_its_own_points(tmp_path):
    killer = reference.unit_source("WordEmbedding") + "\n\nimport os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
    result = grade_notebook(write_submission(tmp_path / "s.ipynb", {"WordEmbedding": killer}))
    assert result.status == "graded"
    assert lost(result) == all_tests_of("WordEmbedding"), failures(result)
    assert all("ended while your code ran (twice)" in t.reason for t in result.tests if t.unit == "WordEmbedding")


def test_grading_leaves_nothing_in_the_temporary_directory(tmp_path, monkeypatch):
    """Nothing of a grading lives where a tmp cleaner (or a full disk) could reach it."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    grade_notebook(INSTRUCTOR_NOTEBOOK)
    assert list(tmp_path.iterdir()) == []


STOPS_THE_WORKER = """

import os, signal, time
__WORKER__ = os.getppid()
if os.fork() == 0:  # a helper: wakes the worker once the wall-clock limit has passed
    time.sleep(__WAKE__)
    os.kill(__WORKER__, signal.SIGCONT)
    os._exit(0)
os.kill(__WORKER__, signal.SIGSTOP)
time.sleep(8)
"""


@pytest.mark.parametrize("wake", [6, 3600], ids=["woken-past-the-wall-clock", "stopped-for-good"])
def test_a_unit_that_stops_the_worker_loses_only_its_own_points(tmp_path, monkeypatch, wake):
    """A stopped worker enforces no limit. Stopped for good, it used to be silent until the
    watchdog (NOT GRADED after 11 minutes, twice); woken past the wall-clock limit, its unit
    used to be "busy" (the machine's fault): a free second try, then NOT GRADED."""
    monkeypatch.setattr(submission_sandbox, "UNIT_WALL_SECONDS", 4)
    monkeypatch.setattr(submission_sandbox, "UNIT_SECONDS", 3)
    cell = reference.unit_source("WordEmbedding") + (
        STOPS_THE_WORKER.replace("__WORKER__", "_worker").replace("__WAKE__", str(wake)))
    result = grade_notebook(write_submission(tmp_path / "s.ipynb", {"WordEmbedding": cell}))
    assert result.status == "graded", result.notes
    assert lost(result) == all_tests_of("WordEmbedding"), failures(result)
    assert all("stopped the grading process" in t.reason for t in result.tests if t.unit == "WordEmbedding")
