"""A class graded on a real one-node Slurm cluster (slurmctld, slurmd and munged started here
from a temporary directory, tests/slurm_cluster.py): the array job of `python -m autograder
slurm` and its dependent merge give every student the score `batch --jobs 1` gives; a shard
killed mid-way (scancel) and submitted again grades only what it had not stored.

Skipped, with the reason, where no cluster can be started (not root, no apt to install
slurm-wlm and munge). Before the fix there was no --shard, merge or slurm command.
"""

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autograder import batch
from catalogue.buggy import BUGS
from conftest import COCO_PT, REPO_ROOT
from grading import write_submission
from solution import source as reference

pytestmark = pytest.mark.slow  # gradings, batches or the command line: not in make test-fast

SECRET = "slurm tests"
NOTEBOOK = f"{batch.ASSIGNMENT}/{batch.NOTEBOOK}"
SHARDS = 3
BUGGY = ("step_forward_no_bias", "embedding_off_by_one", "loss_mean_over_time", "rnn_backward_tanh_twice")


def write_class(course: Path) -> list[str]:
    """Six students, sorted: a correct one, four distinct bugs, stubs everywhere."""
    bugs = {bug.id: bug for bug in BUGS}
    cells = {"s1_correct": {}, **{f"s{i}_{name}": bugs[name].submission() for i, name in enumerate(BUGGY, 2)},
             "s6_stubs": {u: reference.strip_solutions(reference.unit_source(u)) for u in reference.graded_units()}}
    for student, replaced in cells.items():
        write_submission(course / "submitted" / student / NOTEBOOK, replaced)
    return sorted(cells)


def cli(*args, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "CAPTIONING_GRADER_SECRET": SECRET}
    done = subprocess.run([sys.executable, "-m", "autograder", *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert not check or done.returncode == 0, done.stderr[-3000:]
    return done


def scores(course: Path) -> dict[str, dict]:
    """Every column of class_results.csv but the notes, per student."""
    with open(course / batch.CLASS_CSV) as f:
        return {row.pop("student"): {k: v for k, v in row.items() if k != "notes"} for row in csv.DictReader(f)}


def result_files(course: Path) -> dict[str, int]:
    """{student: mtime_ns of the stored result}: a file rewritten is a submission graded again."""
    return {p.stem: p.stat().st_mtime_ns for p in (course / batch.RESULTS_DIR).glob("*.json")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import slurm_cluster

    try:
        running = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    except slurm_cluster.Unavailable as exc:
        pytest.skip(f"no Slurm cluster here: {exc}")
    running.env["CAPTIONING_GRADER_SECRET"] = SECRET  # sbatch exports it to every task
    yield running
    running.stop()


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    """The class graded by one `batch --jobs 1` (the expected scores), and a copy to shard."""
    expected, sharded = tmp_path_factory.mktemp("expected"), tmp_path_factory.mktemp("sharded")
    students = write_class(expected)
    shutil.copytree(expected / "submitted", sharded / "submitted")
    cli("batch", expected, "--jobs", "1", "--data", COCO_PT)
    return expected, sharded, students


def test_the_array_job_and_its_merge_give_the_scores_of_one_batch(cluster, classes, tmp_path_factory):
    expected, course, students = classes
    out = tmp_path_factory.mktemp("scripts")
    cli("slurm", course, "--shards", SHARDS, "--out", out, "--no-gradebook", "--data", COCO_PT)
    submitted = subprocess.run([str(out / "submit.sh")], env=cluster.env, capture_output=True, text=True,
                               timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    merge_job = submitted.stdout.split("merge: job ")[1].split()[0]
    cluster.wait(merge_job, timeout=1500)
    assert cluster.exit_code(merge_job) == 0, [p.read_text() for p in (out / "logs").glob("merge-*.out")]
    want = scores(expected)
    assert sorted(want) == students and len({row["score"] for row in want.values()}) >= 5
    assert scores(course) == want
    logs = sorted((out / "logs").glob("grade-*_*.out"))
    assert len(logs) == SHARDS and all("2 of 6 students; 0 already graded" in p.read_text() for p in logs)


def test_a_shard_killed_mid_way_and_resubmitted_grades_nothing_twice(cluster, classes, tmp_path_factory):
    expected, course, students = classes
    out = tmp_path_factory.mktemp("scripts")
    cli("slurm", course, "--shards", SHARDS, "--out", out, "--no-gradebook", "--data", COCO_PT)
    mine = batch.Shard(1, SHARDS).select(students)
    for student in mine:  # as if shard 1 had never run
        (course / batch.RESULTS_DIR / f"{student}.json").unlink()
    before = result_files(course)
    job = cluster.sbatch("--array=1", str(out / "grade.sbatch"))
    deadline = time.monotonic() + 900
    while not set(mine) & set(result_files(course)) and time.monotonic() < deadline:
        time.sleep(0.1)
    cluster.run("scancel", job)
    cluster.wait(job, timeout=120)
    stored = {s: t for s, t in result_files(course).items() if s in mine}
    assert len(stored) == 1, f"the kill came too late to test anything: {stored}"

    again = cluster.sbatch("--array=1", str(out / "grade.sbatch"))
    cluster.wait(again, timeout=900)
    log = (out / "logs" / f"grade-{again}_1.out").read_text()
    assert "1 already graded or with nothing to grade, 1 to grade" in log, log
    after = result_files(course)
    assert set(after) == set(students)
    # Nothing stored before was written again: not the other shards', not the one the killed
    # task had finished.
    assert {s: after[s] for s in [*before, *stored]} == {**before, **stored}
    assert cli("merge", course, "--no-gradebook", "--data", COCO_PT).returncode == 0
    assert scores(course) == scores(expected)
