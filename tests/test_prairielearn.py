"""PrairieLearn's external-grader entrypoint, run in a fake /grade layout (a temporary
directory), as tests/test_gradescope.py runs the Gradescope zip: real gradings, and stand-ins
for the grader where it must fail. The results' schema is PrairieLearn's (docs,
externalGrading.md, "Grading results"): score in [0, 1], gradable, and per test name,
points, max_points, message, output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import checks
from conftest import COCO_PT, REPO_ROOT
from grading import write_submission
from solution import source as reference

pytestmark = pytest.mark.slow  # gradings, batches or the command line: not in make test-fast

TEST_KEYS = {"name", "points", "max_points", "message", "output"}


def entrypoint(grade_root: Path, python=sys.executable, secret: str | None = "prairielearn tests") -> dict:
    """Run the entrypoint on grade_root/student; the results.json it wrote."""
    env = {k: v for k, v in os.environ.items() if k != "CAPTIONING_GRADER_SECRET"}
    if secret is not None:
        (grade_root / "serverFilesCourse").mkdir(parents=True, exist_ok=True)
        (grade_root / "serverFilesCourse" / "captioning_grader_secret").write_text(secret + "\n")
    done = subprocess.run([sys.executable, "-m", "autograder.cluster.prairielearn",
                           "--student", str(grade_root / "student"),
                           "--results", str(grade_root / "results" / "results.json"),
                           "--secret-file", str(grade_root / "serverFilesCourse" / "captioning_grader_secret"),
                           "--data", str(COCO_PT), "--python", str(python)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]  # a results.json was written: PL reads it
    return json.loads((grade_root / "results" / "results.json").read_text())


def check_schema(results: dict) -> None:
    assert isinstance(results["gradable"], bool)
    assert isinstance(results["score"], float) and 0.0 <= results["score"] <= 1.0
    for test in results["tests"]:
        assert set(test) == TEST_KEYS and isinstance(test["name"], str)
        assert 0 <= test["points"] <= test["max_points"]


def test_a_correct_submission_scores_1(tmp_path):
    write_submission(tmp_path / "student" / "rnn_captioning.ipynb")
    results = entrypoint(tmp_path)
    check_schema(results)
    assert results["gradable"] is True and results["score"] == 1.0
    assert sum(t["max_points"] for t in results["tests"]) == 100
    assert all(t["points"] == t["max_points"] and t["message"] == "passed" for t in results["tests"])


def test_a_buggy_submission_loses_the_points_of_its_unit(tmp_path):
    stub = {"LSTM": reference.strip_solutions(reference.unit_source("LSTM"))}
    write_submission(tmp_path / "student" / "my_work.ipynb", stub)  # renamed: still found
    results = entrypoint(tmp_path)
    check_schema(results)
    lstm_points = sum(checks.load_points()["LSTM"].values())  # the points file, not the grader
    assert results["gradable"] is True and results["score"] == pytest.approx((100 - lstm_points) / 100)
    lstm = [t for t in results["tests"] if t["name"].startswith("LSTM:")]
    assert lstm and all(t["points"] == 0 and "NotImplementedError" in t["message"] for t in lstm)
    assert "graded my_work.ipynb" in results["output"]


def stand_in(tmp_path: Path, status: int) -> Path:
    """A 'python' that writes a results.json of score 0 and exits with status; it records its call."""
    python = tmp_path / "python"
    python.write_text('#!/usr/bin/env bash\nfor a in "$@"; do [ "$prev" = --results ] && out="$a"; prev="$a"; done\n'
                      f'touch "{tmp_path}/called"\n'
                      'echo \'{"score": 0, "max_score": 100, "output": "x", "tests": []}\' > "$out"\n'
                      f'echo "NOT GRADED: a stand-in" >&2\nexit {status}\n')
    python.chmod(0o755)
    return python


@pytest.mark.parametrize("status", [3, 2])
def test_not_graded_or_a_broken_grader_is_not_gradable_never_a_zero(tmp_path, status):
    (tmp_path / "student").mkdir()
    results = entrypoint(tmp_path, python=stand_in(tmp_path, status))
    check_schema(results)
    assert (tmp_path / "called").exists()
    assert results["gradable"] is False and results["tests"] == [] and "NOT GRADED" in results["message"]


def test_without_a_secret_nothing_is_graded(tmp_path):
    (tmp_path / "student").mkdir()
    results = entrypoint(tmp_path, python=stand_in(tmp_path, 0), secret=None)
    assert results["gradable"] is False and "no secret" in results["message"]
    assert not (tmp_path / "called").exists()
