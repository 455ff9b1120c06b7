"""Grading a class: parallel, resumable, robust to broken submissions and to Ctrl-C."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autograder import batch
from conftest import COCO_PT, REPO_ROOT
from grading import write_submission
from solution import source as reference

NOTEBOOK = f"{batch.ASSIGNMENT}/{batch.NOTEBOOK}"


def stubs() -> dict[str, str]:
    return {u: reference.strip_solutions(reference.unit_source(u)) for u in reference.graded_units()}


def run_batch(course: Path, *extra, **popen):
    env = {**os.environ, "CAPTIONING_GRADER_SECRET": "batch tests"}
    command = [sys.executable, "-m", "autograder", "batch", str(course), "--data", str(COCO_PT), *extra]
    if popen:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True, **popen)
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)


def class_csv(course: Path) -> dict[str, dict]:
    with open(course / batch.CLASS_CSV) as f:
        return {row["student"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """alice: correct; bob: not a notebook (in the middle); carol: stubs; dave: no file."""
    course = tmp_path_factory.mktemp("course")
    write_submission(course / "submitted" / "alice" / NOTEBOOK)
    (course / "submitted" / "bob" / batch.ASSIGNMENT).mkdir(parents=True)
    (course / "submitted" / "bob" / NOTEBOOK).write_text('{"cells": [oops')
    write_submission(course / "submitted" / "carol" / NOTEBOOK, stubs())
    (course / "submitted" / "dave").mkdir()
    done = run_batch(course, "--jobs", "2")
    assert done.returncode == 0, done.stderr
    return course


def test_a_broken_submission_does_not_stop_the_batch(course):
    rows = class_csv(course)
    assert rows["alice"]["score"] == "100" and rows["carol"]["score"] == "0"
    assert rows["bob"]["score"] == "0"
    bob = json.loads((course / batch.RESULTS_DIR / "bob.json").read_text())
    assert "not a Jupyter notebook" in bob["result"]["notes"][0]
    assert rows["dave"]["score"] == "" and "no rnn_captioning.ipynb" in rows["dave"]["error"]


def test_unchanged_submissions_are_not_graded_again(course):
    before = {p.name: p.read_bytes() for p in (course / batch.RESULTS_DIR).iterdir()}
    done = run_batch(course)
    assert "0 to grade" in done.stderr
    after = {p.name: p.read_bytes() for p in (course / batch.RESULTS_DIR).iterdir()}
    assert before == after


def test_a_changed_submission_is_graded_again(course):
    write_submission(course / "submitted" / "carol" / NOTEBOOK,
                     {**stubs(), "WordEmbedding": reference.unit_source("WordEmbedding")})
    done = run_batch(course)
    assert "1 to grade" in done.stderr, done.stderr
    assert class_csv(course)["carol"]["score"] == "5"


def test_ctrl_c_leaves_only_whole_results_and_the_next_run_resumes(tmp_path):
    for student in ("erin", "frank", "grace"):
        write_submission(tmp_path / "submitted" / student / NOTEBOOK)
    results = tmp_path / batch.RESULTS_DIR
    run = run_batch(tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 600
    while not (results.is_dir() and list(results.glob("*.json"))) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    run.communicate(timeout=120)
    assert run.returncode != 0
    finished = list(results.glob("*.json"))
    assert 1 <= len(finished) < 3
    assert not [p for p in results.iterdir() if p.suffix != ".json"], "a half-written file"
    for path in finished:
        assert json.loads(path.read_text())["result"]["tests"]
    assert not (tmp_path / batch.CLASS_CSV).exists()

    done = run_batch(tmp_path)
    assert f"{3 - len(finished)} to grade" in done.stderr, done.stderr
    assert {row["score"] for row in class_csv(tmp_path).values()} == {"100"}
