"""The GitHub Classroom workflow template and the payload it reports."""

import base64
import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # gradings, batches or the command line: not in make test-fast

WORKFLOW = REPO_ROOT / "autograder" / "github_classroom" / "classroom.yml"


def test_workflow_is_valid_yaml_and_grades_with_the_pinned_grader():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = workflow["jobs"]["run-autograding-tests"]["steps"]
    grader = next(s for s in steps if s.get("with", {}).get("repository"))
    assert grader["with"]["ref"] == "${{ env.GRADER_REF }}" and workflow["env"]["GRADER_REF"]
    grade = next(s for s in steps if s.get("id") == "grade")
    # The same entry point as everywhere else, run from the grader's checkout.
    assert grade["working-directory"] == "grader"
    # The submission's folder: the grader picks rnn_captioning.ipynb in it (see submission.py).
    assert "python -m autograder grade ../submission --results results.json" in grade["run"]
    reporter = steps[-1]
    assert reporter["uses"].startswith("classroom-resources/autograding-grading-reporter")
    assert reporter["with"]["runners"] == "grade" and "GRADE_RESULTS" in reporter["env"]


def test_classroom_payload_carries_the_points(tmp_path):
    results = {"score": 7, "max_score": 10, "output": "", "tests": [
        {"name": "a: x", "score": 7, "max_score": 7, "output": "passed", "visibility": "visible"},
        {"name": "b: y", "score": 0, "max_score": 3, "output": "wrong", "visibility": "visible"}]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    done = subprocess.run([sys.executable, "-m", "autograder", "classroom", str(path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    payload = json.loads(base64.b64decode(done.stdout))
    assert payload["max_score"] == 10 and payload["status"] == "fail"
    assert [(t["score"], t["status"]) for t in payload["tests"]] == [(7, "pass"), (0, "fail")]


def test_workflow_grades_with_the_instructors_secret_and_fails_clearly_without_it(tmp_path):
    # Without the fix the workflow passed no secret: every run drew a new one, so the same
    # submission got different hidden inputs (and possibly a different score) each time.
    workflow = yaml.safe_load(WORKFLOW.read_text())
    grade = next(s for s in workflow["jobs"]["run-autograding-tests"]["steps"] if s.get("id") == "grade")
    assert grade["env"]["CAPTIONING_GRADER_SECRET"] == "${{ secrets.CAPTIONING_GRADER_SECRET }}"
    # An unset secret reaches the step as an empty string. Run the step as Actions does
    # (bash -e); it must stop before grading (here, python would not even be found).
    env = {k: v for k, v in os.environ.items() if k != "CAPTIONING_GRADER_SECRET"}
    done = subprocess.run(["bash", "-e", "-c", grade["run"]], cwd=tmp_path, capture_output=True,
                          text=True,
                          env={**env, "CAPTIONING_GRADER_SECRET": "", "GITHUB_OUTPUT": str(tmp_path / "out")})
    assert done.returncode != 0
    assert "::error::The CAPTIONING_GRADER_SECRET secret is not set" in done.stdout
    assert not (tmp_path / "out").exists()
