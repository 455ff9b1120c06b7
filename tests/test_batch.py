"""Grading a class: parallel, resumable, robust to broken submissions and to Ctrl-C; the
cache key; regrading (--force, --student); NOT GRADED outcomes."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autograder import __main__ as cli
from autograder import batch, checks, grade
from conftest import COCO_PT, REPO_ROOT
from grading import write_submission
from solution import source as reference

pytestmark = pytest.mark.slow  # gradings, batches or the command line: not in make test-fast

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
    # dave submitted nothing: a 0 with the reason, never a missing row.
    assert rows["dave"]["score"] == "0" and "nothing submitted" in rows["dave"]["notes"]
    assert {row["status"] for row in rows.values()} == {"graded"}


def test_unchanged_submissions_are_not_graded_again(course):
    before = {p.name: p.read_bytes() for p in (course / batch.RESULTS_DIR).glob("*.json")}
    done = run_batch(course)
    assert "0 to grade" in done.stderr
    after = {p.name: p.read_bytes() for p in (course / batch.RESULTS_DIR).glob("*.json")}
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
    # A shell's background job (`make test &`) ignores SIGINT, and Python then keeps ignoring
    # it: the batch must get Ctrl-C as a terminal gives it.
    run = run_batch(tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 600
    while not (results.is_dir() and list(results.glob("*.json"))) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    run.communicate(timeout=120)
    assert run.returncode != 0
    finished = list(results.glob("*.json"))
    assert 1 <= len(finished) < 3
    assert not [p for p in results.iterdir() if p.is_file() and p.suffix != ".json"], "a half-written file"
    for path in finished:
        assert json.loads(path.read_text())["result"]["tests"]
    assert not (tmp_path / batch.CLASS_CSV).exists()

    done = run_batch(tmp_path)
    assert f"{3 - len(finished)} to grade" in done.stderr, done.stderr
    assert {row["score"] for row in class_csv(tmp_path).values()} == {"100"}


# ---------------------------------------------------------------------------------------
# The cache key: every file of the grader, the reference and the data (no real grading)
# ---------------------------------------------------------------------------------------


def test_the_cache_key_changes_with_every_file_of_the_grader_the_reference_and_the_data(tmp_path):
    # Without the fix the key covered a hand-kept list without submission_sandbox.py, solution/source.py
    # or the data (and grader_fingerprint took no data file): this test fails there.
    root, data = tmp_path / "kit", tmp_path / "coco.pt"
    for name in batch.grader_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes((REPO_ROOT / name).read_bytes())
    data.write_bytes(b"the data, version 1")
    assert {"autograder/submission_sandbox.py", "autograder/points.toml", "solution/source.py",
            "solution/captioning.py"} <= set(batch.grader_files(root))

    def key(secret=b"secret"):
        return batch.grader_fingerprint(secret, data, root)

    base = key()
    for name in batch.grader_files(root):
        path = root / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        assert key() != base, f"editing {name} leaves the cache key unchanged"
        path.write_bytes(original)
    assert key() == base
    (root / "autograder" / "new_module.py").write_text("X = 1\n")  # found by the glob
    assert key() != base
    (root / "autograder" / "new_module.py").unlink()
    data.write_bytes(b"the data, version 2")
    assert key() != base
    data.write_bytes(b"the data, version 1")
    assert key() == base and key(b"another secret") != base
    # Neither the secret's file (its content is hashed as the secret) nor caches count.
    (root / "autograder" / ".grader_secret").write_text("x")
    (root / "autograder" / "__pycache__").mkdir()
    (root / "autograder" / "__pycache__" / "grade.cpython-311.pyc").write_bytes(b"x")
    assert key() == base


# ---------------------------------------------------------------------------------------
# Regrading and NOT GRADED: the batch's logic, with grade.grade replaced (no real grading;
# --jobs 0 grades in this process, where the stand-in is)
# ---------------------------------------------------------------------------------------


def full_marks() -> grade.GradeResult:
    return grade.GradeResult([grade.TestResult(u, t, p, p) for u, ts in checks.load_points().items()
                              for t, p in ts.items()], [], "bwrap", "cpu")


@pytest.fixture
def fake_class(tmp_path, monkeypatch):
    """ann, ben and cat, each with a notebook; grading is a stand-in that records who it
    grades, and says NOT GRADED for those in `failing`."""
    for student in ("ann", "ben", "cat"):
        write_submission(tmp_path / "submitted" / student / NOTEBOOK)
    calls, failing = [], set()

    def fake_grade(notebook, **kwargs):
        student = Path(notebook).parts[-3]
        calls.append(student)
        if student in failing:
            return batch.not_graded("the sandbox died twice", {"where": "a test"})
        return full_marks()

    monkeypatch.setattr(grade, "grade", fake_grade)
    monkeypatch.setenv("CAPTIONING_GRADER_SECRET", "fake class")

    def run(*extra):
        calls.clear()
        return cli.main(["batch", str(tmp_path), "--data", str(COCO_PT), "--jobs", "0", *extra])

    return tmp_path, run, calls, failing


def test_force_and_student_grade_again(fake_class, capsys):
    # Without the fix: no --force or --student options (argparse exits 2).
    course, run, calls, _ = fake_class
    assert run() == 0 and sorted(calls) == ["ann", "ben", "cat"]
    assert run() == 0 and calls == []
    assert run("--student", "ben") == 0 and calls == ["ben"]
    assert run("--student", "ben", "--student", "cat") == 0 and sorted(calls) == ["ben", "cat"]
    assert run("--force") == 0 and sorted(calls) == ["ann", "ben", "cat"]
    capsys.readouterr()
    assert run("--student", "zed") == 2 and calls == []
    assert "zed" in capsys.readouterr().err


def test_not_graded_is_reported_never_stored_as_a_result_and_graded_again(fake_class, capsys):
    # Without the fix: the batch has no NOT GRADED (the stand-in's result is stored as a
    # score of 0 and reused, the CSV has no status column, the exit status is 0).
    course, run, calls, failing = fake_class
    failing.add("ben")
    assert run() == 3
    out = capsys.readouterr()
    assert "ben: NOT GRADED: the sandbox died twice" in out.err and "1 NOT GRADED" in out.out
    rows = class_csv(course)
    assert rows["ben"]["status"] == grade.NOT_GRADED and rows["ben"]["score"] == ""
    assert "the sandbox died twice" in rows["ben"]["notes"]
    assert rows["ann"]["status"] == "graded" and rows["ann"]["score"] == "100"
    stored = json.loads((course / batch.RESULTS_DIR / "ben.json").read_text())
    assert "result" not in stored and stored["not_graded"]["result"]["status"] == grade.NOT_GRADED

    assert run() == 3 and calls == ["ben"]  # tried again, alone
    failing.clear()
    assert run() == 0 and calls == ["ben"]
    assert class_csv(course)["ben"]["status"] == "graded"
    assert run() == 0 and calls == []


def test_a_grader_crash_on_one_submission_is_not_graded_not_a_zero(fake_class, monkeypatch):
    course, run, calls, _ = fake_class

    def crash(notebook, **kwargs):
        calls.append(Path(notebook).parts[-3])
        if "/cat/" in str(notebook):
            raise RuntimeError("a bug of the grader")
        return full_marks()

    monkeypatch.setattr(grade, "grade", crash)
    assert run() == 3
    rows = class_csv(course)
    assert rows["cat"]["status"] == grade.NOT_GRADED and "RuntimeError: a bug of the grader" in rows["cat"]["notes"]
    stored = json.loads((course / batch.RESULTS_DIR / "cat.json").read_text())
    assert "Traceback" in stored["not_graded"]["result"]["diagnostics"]["traceback"]


def test_points_not_totalling_100_stop_the_batch_with_a_message(fake_class, monkeypatch, tmp_path, capsys):
    course, run, calls, _ = fake_class
    points = tmp_path / "points.toml"
    points.write_text(checks.POINTS_FILE.read_text().replace("forward = 4", "forward = 3", 1))
    monkeypatch.setattr(checks, "POINTS_FILE", points)
    assert run() == 2 and calls == []
    assert "sums to 99, not 100" in capsys.readouterr().err


def test_jobs_are_capped_to_what_the_machine_can_hold():
    """Each job may use its sandbox's limit (3 GiB) and a grader process (1 GiB)."""
    gib = 1 << 30
    assert batch.jobs_that_fit(2, "cpu", memory=24 * gib) == (2, "")
    jobs, why = batch.jobs_that_fit(8, "cpu", memory=24 * gib)
    assert jobs == 6 and "32 GiB" in why and "24 GiB" in why and "--jobs 6" in why
    assert batch.jobs_that_fit(4, "cpu", memory=2 * gib)[0] == 1
    jobs, why = batch.jobs_that_fit(16, "cuda", memory=256 * gib)  # 10% of the GPU each
    assert jobs == 9 and "GPU" in why
