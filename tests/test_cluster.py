"""Past one machine, without grading: shards (which slice, from which index), merge (what it
reports and its exit status, from stored results written here), the Slurm scripts and the
Kubernetes manifests (validated against Kubernetes' schema offline), PrairieLearn's results.

Before the fix there was no --shard, merge, slurm, kubernetes or prairielearn at all.
"""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autograder import __main__ as cli
from autograder import batch, checks, grade, reports, submission_sandbox
from autograder.cluster import limits, prairielearn
from conftest import COCO_PT, REPO_ROOT
from grading import write_submission

NOTEBOOK = f"{batch.ASSIGNMENT}/{batch.NOTEBOOK}"


# ---------------------------------------------------------------------------------------
# Shards
# ---------------------------------------------------------------------------------------


def test_shards_are_fixed_contiguous_slices_that_cover_the_class_once():
    students = [f"s{i:02d}" for i in range(10)]
    slices = [batch.Shard(i, 3).select(students) for i in range(3)]
    assert slices == [students[0:3], students[3:6], students[6:10]]  # 10*i//3: 0, 3, 6, 10
    assert [batch.Shard(i, 4).select(students[:2]) for i in range(4)] == [[], ["s00"], [], ["s01"]]
    assert batch.Shard(0, 1).select(students) == students


@pytest.mark.parametrize("spec, environ, index", [
    ("2/5", {}, 2),
    ("2/5", {"SLURM_ARRAY_TASK_ID": "4"}, 2),  # given explicitly: the environment is not read
    ("/5", {"SLURM_ARRAY_TASK_ID": "3"}, 3),
    ("/5", {"JOB_COMPLETION_INDEX": "0"}, 0),
    ("/5", {"SLURM_ARRAY_TASK_ID": "1", "JOB_COMPLETION_INDEX": "1"}, 1),
])
def test_the_shard_index_comes_from_the_command_line_or_for_slash_n_from_the_array_job(spec, environ, index):
    assert batch.parse_shard(spec, environ) == batch.Shard(index, 5)


@pytest.mark.parametrize("spec, environ, says", [
    ("5/5", {}, "out of range for 5 shards (0 to 4"),
    ("/5", {"SLURM_ARRAY_TASK_ID": "5"}, "--array=0-4"),
    ("/5", {}, "neither is set"),
    ("/5", {"SLURM_ARRAY_TASK_ID": "1", "JOB_COMPLETION_INDEX": "2"}, "disagree"),
    ("/5", {"SLURM_ARRAY_TASK_ID": "x"}, "$SLURM_ARRAY_TASK_ID must be a whole number"),
    ("1/0", {}, "N must be at least 1"),
    ("-1/5", {}, "I (the shard) must be a whole number"),
    ("3", {}, "write I/N"),
    ("1/five", {}, "N (the number of shards) must be a whole number"),
])
def test_a_bad_shard_is_a_clear_error(spec, environ, says):
    with pytest.raises(ValueError) as caught:
        batch.parse_shard(spec, environ)
    assert says in str(caught.value)


def test_the_command_line_rejects_a_bad_shard_before_grading(capsys, monkeypatch):
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    with pytest.raises(SystemExit) as caught:
        cli.main(["batch", "nowhere", "--shard", "/3"])
    assert caught.value.code == 2 and "neither is set" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# A shard grades its slice only; merge grades nothing (grade.grade replaced by a recorder)
# ---------------------------------------------------------------------------------------


def marks(points_lost: int) -> grade.GradeResult:
    """A result losing points_lost points of the first test (a distinct score per student)."""
    tests = [grade.TestResult(u, t, p, p) for u, ts in checks.load_points().items() for t, p in ts.items()]
    tests[0].score -= points_lost
    return grade.GradeResult(tests, [], "bwrap", "cpu")


@pytest.fixture
def fake_class(tmp_path, monkeypatch):
    """Five students a..e with notebooks (a loses 0 points, b 1, ...), f with an empty
    folder; grading is a recorder (no sandbox); e's is NOT GRADED when asked."""
    students = "abcde"
    for student in students:
        write_submission(tmp_path / "submitted" / student / NOTEBOOK)
    (tmp_path / "submitted" / "f").mkdir()
    calls, failing = [], set()

    def fake_grade(notebook, **kwargs):
        student = Path(notebook).parts[-3]
        calls.append(student)
        if student in failing:
            return batch.not_graded("the sandbox died twice")
        return marks(students.index(student) % 3)

    monkeypatch.setattr(grade, "grade", fake_grade)
    monkeypatch.setenv("CAPTIONING_GRADER_SECRET", "cluster tests")
    for name in batch.SHARD_INDEX_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def run(*args):
        calls.clear()
        return cli.main([*args, "--data", str(COCO_PT)])

    return tmp_path, run, calls, failing


def rows(course: Path) -> dict[str, dict]:
    with open(course / batch.CLASS_CSV) as f:
        return {row["student"]: row for row in csv.DictReader(f)}


def test_each_shard_grades_its_slice_and_merge_reports_the_missing_then_the_class(fake_class, capsys, monkeypatch):
    course, run, calls, _ = fake_class
    # 6 students in 3 shards: [a, b], [c, d], [e, f]
    assert run("batch", str(course), "--jobs", "0", "--shard", "1/3") == 0 and calls == ["c", "d"]
    assert not (course / batch.CLASS_CSV).exists()  # shards write no class files
    assert run("merge", str(course), "--no-gradebook") == cli.MISSING_EXIT and calls == []
    out = capsys.readouterr()
    assert "a: no stored result" in out.err and "b: no stored result" in out.err and "e: no" in out.err
    assert "c: no" not in out.err and "f: no" not in out.err  # f: nothing submitted, a 0
    found = rows(course)
    assert found["a"]["status"] == batch.MISSING and found["a"]["score"] == ""
    assert found["c"]["status"] == "graded" and found["c"]["score"] == "98"
    assert found["f"]["score"] == "0" and "nothing submitted" in found["f"]["notes"]

    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    assert run("batch", str(course), "--jobs", "0", "--shard", "/3") == 0 and calls == ["a", "b"]
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert run("batch", str(course), "--jobs", "0", "--shard", "/3") == 0 and calls == []  # stored
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    assert run("batch", str(course), "--jobs", "0", "--shard", "/3") == 0 and calls == ["e"]
    assert run("merge", str(course), "--no-gradebook") == 0 and calls == []
    assert {s: r["score"] for s, r in rows(course).items()} == {
        "a": "100", "b": "99", "c": "98", "d": "100", "e": "99", "f": "0"}
    assert (course / batch.RESULTS_DIR / "nbgrader_input" / "f" / NOTEBOOK).is_file()


def test_merge_reports_not_graded_with_exit_3_and_never_grades(fake_class, capsys):
    course, run, calls, failing = fake_class
    failing.add("e")
    assert run("batch", str(course), "--jobs", "0") == cli.NOT_GRADED_EXIT
    assert run("merge", str(course), "--no-gradebook") == cli.NOT_GRADED_EXIT and calls == []
    assert "e: NOT GRADED: the sandbox died twice" in capsys.readouterr().err
    assert rows(course)["e"]["status"] == grade.NOT_GRADED


def test_merge_without_an_nbgrader_course_says_it_builds_no_gradebook(fake_class, capsys):
    course, run, calls, _ = fake_class
    assert run("batch", str(course), "--jobs", "0") == 0
    assert run("merge", str(course)) == 0 and calls == []
    assert "no nbgrader_config.py" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Sizes of a shard, from the grader's own limits
# ---------------------------------------------------------------------------------------


def test_a_shards_time_and_memory_follow_the_graders_limits(monkeypatch):
    # Worked by hand from the limits' meaning: two 300 s starts (the second for the units
    # judged again), 45 s for each of the 10 units and the 3 that may be judged again, 20 s
    # of the reference's computing for each of the 2 served groups and the 3 again: 1285 s.
    units = len(submission_sandbox.UNITS) + 3
    per = 2 * submission_sandbox.STARTUP_SECONDS + units * submission_sandbox.UNIT_SECONDS + 5 * 20
    assert units == 13 and per == 1285 and limits.seconds_per_submission() == per
    assert limits.shard_seconds(5, 2) == submission_sandbox.STARTUP_SECONDS + 3 * per  # 3 rounds of 2 jobs
    assert limits.shard_memory_bytes(2) == 2 * (3 << 30) + 3 * (1 << 30)
    # imported, not restated:
    monkeypatch.setattr(submission_sandbox, "UNIT_SECONDS", submission_sandbox.UNIT_SECONDS + 10)
    assert limits.seconds_per_submission() == per + 10 * units
    assert limits.shard_sizes(7, 3) == [2, 2, 3] and sum(limits.shard_sizes(5000, 256)) == 5000


def slurm_cli(tmp_path, *extra):
    course = tmp_path / "course"
    for student in ("a", "b", "c", "d", "e"):
        (course / "submitted" / student).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CAPTIONING_GRADER_SECRET": "cluster tests"}
    return subprocess.run([sys.executable, "-m", "autograder", "slurm", str(course), "--out", str(tmp_path / "out"),
                           *extra], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def sbatch_options(script: Path) -> dict[str, str]:
    lines = [line.split(None, 1)[1] for line in script.read_text().splitlines() if line.startswith("#SBATCH")]
    return dict(option.lstrip("-").split("=", 1) for option in lines)


def test_the_slurm_scripts_ask_for_what_a_shard_needs(tmp_path):
    done = slurm_cli(tmp_path, "--shards", "2", "--jobs", "2", "--cpus-per-job", "2", "--gpu", "--partition", "gpu")
    assert done.returncode == 0, done.stderr
    grade_options = sbatch_options(tmp_path / "out" / "grade.sbatch")
    # 5 students in 2 shards: at most 3 per shard, 2 at a time: 2 rounds.
    seconds = submission_sandbox.STARTUP_SECONDS + 2 * limits.seconds_per_submission()
    assert grade_options["array"] == "0-1" and grade_options["cpus-per-task"] == "4"
    assert grade_options["gres"] == "gpu:1" and grade_options["partition"] == "gpu"
    assert grade_options["mem"] == f"{2 * 4096 + 1024}M"
    days, clock = grade_options["time"].split("-")
    h, m, s = map(int, clock.split(":"))
    assert int(days) * 86400 + h * 3600 + m * 60 + s == 60 * math.ceil(seconds / 60)
    command = (tmp_path / "out" / "grade.sbatch").read_text().splitlines()[-1]
    assert f"-m autograder batch {tmp_path / 'course'} --shard /2 --jobs 2 --device cuda" in command
    assert command.startswith(f"exec {sys.executable} ")  # the interpreter of make autograde
    submit = (tmp_path / "out" / "submit.sh").read_text()
    assert "--dependency=afterany:" in submit and os.access(tmp_path / "out" / "submit.sh", os.X_OK)
    assert "merge" in (tmp_path / "out" / "merge.sbatch").read_text().splitlines()[-1]
    assert subprocess.run(["bash", "-n", str(tmp_path / "out" / "submit.sh")]).returncode == 0


@pytest.mark.parametrize("extra, says", [
    (["--shards", "6"], "more than the 5 students"),
    (["--shards", "0"], "at least 1"),
    (["--shards", "2", "--jobs", "0"], "at least 1"),
])
def test_slurm_refuses_shards_that_cannot_work(tmp_path, extra, says):
    done = slurm_cli(tmp_path, *extra)
    assert done.returncode == 2 and says in done.stderr and not (tmp_path / "out" / "grade.sbatch").exists()


# ---------------------------------------------------------------------------------------
# Kubernetes: the manifests against the Kubernetes schema, offline (kubernetes-validate)
# ---------------------------------------------------------------------------------------

KUBERNETES_VERSION = "1.33.0"  # backoffLimitPerIndex is GA from 1.33


def kubernetes_manifests(tmp_path, *extra) -> dict[str, dict]:
    course = tmp_path / "course"
    for student in ("a", "b", "c", "d", "e"):
        (course / "submitted" / student).mkdir(parents=True, exist_ok=True)
    out = tmp_path / "k8s"
    code = cli.main(["kubernetes", str(course), "--image", "captioning-grader:1", "--claim", "course-pvc",
                     "--out", str(out), *extra])
    assert code == 0
    return {p.name: yaml.safe_load(p.read_text()) for p in out.glob("*.yaml")}


@pytest.mark.parametrize("extra", [["--shards", "3"], ["--shards", "5", "--parallelism", "2", "--gpu", "--jobs", "2"],
                                   ["--shards", "2", "--sandbox", "unsandboxed", "--namespace", "grading"]])
def test_the_kubernetes_manifests_are_valid_jobs(tmp_path, extra):
    import kubernetes_validate

    found = kubernetes_manifests(tmp_path, *extra)
    assert set(found) == {"grade-job.yaml", "merge-job.yaml"}
    for manifest in found.values():
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)  # raises if invalid


def test_a_typo_in_a_manifest_fails_the_schema_check(tmp_path):
    """The validation above can fail: a misspelt field, a wrong type."""
    import kubernetes_validate

    job = kubernetes_manifests(tmp_path, "--shards", "3")["grade-job.yaml"]
    job["spec"]["backoffLimitPerIndx"] = job["spec"].pop("backoffLimitPerIndex")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    job = kubernetes_manifests(tmp_path, "--shards", "3")["grade-job.yaml"]
    job["spec"]["completions"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def test_the_indexed_job_grades_one_shard_per_index(tmp_path):
    found = kubernetes_manifests(tmp_path, "--shards", "5", "--parallelism", "2", "--gpu", "--jobs", "2")
    spec = found["grade-job.yaml"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 5 and spec["parallelism"] == 2
    assert spec["backoffLimitPerIndex"] >= 1 and spec["template"]["spec"]["restartPolicy"] == "Never"
    container = spec["template"]["spec"]["containers"][0]
    assert container["command"][3:] == ["batch", "/course", "--shard", "/5", "--jobs", "2", "--device", "cuda"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"] == {"cpu": "2", "memory": f"{2 * 4096 + 1024}Mi"}
    assert container["volumeMounts"] == [{"name": "course", "mountPath": "/course"}]
    assert spec["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {"claimName": "course-pvc"}
    secret = container["env"][0]
    assert secret["name"] == "CAPTIONING_GRADER_SECRET" and "secretKeyRef" in secret["valueFrom"]


def test_unsandboxed_pods_are_locked_down_and_say_so(tmp_path):
    found = kubernetes_manifests(tmp_path, "--shards", "2", "--sandbox", "unsandboxed")
    pod = found["grade-job.yaml"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--allow-unsandboxed" in container["command"] and "hostUsers" not in pod
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
    bwrap = kubernetes_manifests(tmp_path, "--shards", "2")["grade-job.yaml"]["spec"]["template"]["spec"]
    assert "--allow-unsandboxed" not in bwrap["containers"][0]["command"] and bwrap["hostUsers"] is False


# ---------------------------------------------------------------------------------------
# PrairieLearn's results from the kit's (the entrypoint itself: tests/test_prairielearn.py)
# ---------------------------------------------------------------------------------------


def test_prairielearn_results_have_its_schema_and_a_score_from_0_to_1():
    result = marks(0)
    result.tests[-1].score, result.tests[-1].reason = 0, "wrong shape (2, 3), expected (2, 4)"
    kit = reports.results_json(result)
    found = prairielearn.pl_results(kit)
    lost = result.tests[-1].max_score
    assert found["gradable"] is True and found["score"] == pytest.approx((100 - lost) / 100)
    assert all(set(t) == {"name", "points", "max_points", "message", "output"} for t in found["tests"])
    assert sum(t["max_points"] for t in found["tests"]) == 100
    assert found["tests"][-1]["points"] == 0 and "wrong shape" in found["tests"][-1]["message"]
    json.dumps(found)  # serialisable as written
    assert prairielearn.not_gradable("x")["gradable"] is False
