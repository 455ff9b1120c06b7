"""The GitHub Classroom workflow template and the payload it reports."""

import base64
import json
import subprocess
import sys

import yaml

from conftest import REPO_ROOT

WORKFLOW = REPO_ROOT / "autograder" / "github_classroom" / "classroom.yml"


def test_workflow_is_valid_yaml_and_grades_with_the_pinned_grader():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = workflow["jobs"]["run-autograding-tests"]["steps"]
    grader = next(s for s in steps if s.get("with", {}).get("repository"))
    assert grader["with"]["ref"] == "${{ env.GRADER_REF }}" and workflow["env"]["GRADER_REF"]
    grade = next(s for s in steps if s.get("id") == "grade")
    # The same entry point as everywhere else, run from the grader's checkout.
    assert grade["working-directory"] == "grader"
    assert "python -m autograder grade ../submission/rnn_captioning.ipynb" in grade["run"]
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
