"""Slurm: an array job of shards, then a merge job that waits for all of them.

    python -m autograder slurm COURSE --shards N [--jobs J] [--cpus-per-job C] [--gpu]
                                      [--partition P] [--out DIR] [--allow-unsandboxed]

writes DIR/grade.sbatch (array task i runs ``batch COURSE --shard /N``: i comes from
$SLURM_ARRAY_TASK_ID), DIR/merge.sbatch (``merge COURSE``) and DIR/submit.sh, which submits
the array and then the merge with ``--dependency=afterany:`` on it (the merge runs however
the shards ended, and lists any student left without a result). Extra arguments to
submit.sh go to both sbatch calls (``./submit.sh --account=cs231``).

Each task runs the grader exactly as ``make autograde`` does: this interpreter, from the
repository root, with the submitter's environment (sbatch exports it by default; the
secret, $CAPTIONING_GRADER_SECRET or autograder/.grader_secret, must be the same for every
task: this command creates the file now when neither exists, so that no two tasks create
their own). The repository, the data and COURSE must be on a file system every node sees.

A shard stopped (scancel, a node lost, its time limit) keeps every result it stored:
``sbatch --array=I DIR/grade.sbatch`` grades only its students still missing, then
``sbatch DIR/merge.sbatch`` (or ``make merge``).
"""

import argparse
import shlex
import sys
from pathlib import Path

from autograder import DATA_FILE, REPO_ROOT

JOB_NAME = "captioning"
# merge hashes each notebook and copies it for nbgrader, then nbgrader reads the stored
# results; generous, since a merge stopped by its limit can simply be run again.
MERGE_SECONDS = 3600
MERGE_SECONDS_PER_STUDENT = 2


def add_command(commands) -> None:
    """`python -m autograder slurm`: its arguments, and run() as args.run."""
    cmd = commands.add_parser("slurm", help="write an sbatch array job of shards and its merge job",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.add_argument("course", type=Path, help="the nbgrader course directory (on a shared file system)")
    cmd.add_argument("--shards", type=int, required=True, help="array tasks, each grading one slice")
    cmd.add_argument("--jobs", type=int, default=1, help="submissions each task grades at once")
    cmd.add_argument("--cpus-per-job", type=int, default=1, help="CPUs per grading job (default 1)")
    cmd.add_argument("--gpu", action="store_true", help="--gres=gpu:1 per task and --device cuda")
    cmd.add_argument("--partition", help="the Slurm partition (default: the cluster's)")
    cmd.add_argument("--data", type=Path, default=DATA_FILE)
    cmd.add_argument("--python", default=sys.executable, help="the grader's interpreter on the nodes")
    cmd.add_argument("--allow-unsandboxed", action="store_true",
                     help="grade without bubblewrap where the nodes cannot run it (results say so)")
    cmd.add_argument("--no-gradebook", action="store_true", help="merge writes class_results.csv only")
    cmd.add_argument("--out", type=Path, default=REPO_ROOT / "dist" / "slurm", help="where to write (dist/slurm)")
    cmd.set_defaults(run=run)


def slurm_time(seconds: int) -> str:
    """Seconds as Slurm's D-HH:MM:SS, rounded up to the minute."""
    minutes = -(-seconds // 60)
    days, minutes = divmod(minutes, 24 * 60)
    return f"{days}-{minutes // 60:02d}:{minutes % 60:02d}:00"


def directives(name: str, *, cpus: int, memory_bytes: int, seconds: int, log: Path,
               partition: str | None, extra=()) -> list[str]:
    """The #SBATCH lines of one job; extra: more options (--array, --gres)."""
    options = [f"--job-name={name}", *extra, f"--cpus-per-task={cpus}",
               f"--mem={-(-memory_bytes // 2**20)}M", f"--time={slurm_time(seconds)}",
               f"--chdir={REPO_ROOT}", f"--output={log}"]
    if partition:
        options.append(f"--partition={partition}")
    return [f"#SBATCH {option}" for option in options]


def grade_script(args, students: int) -> str:
    """grade.sbatch: array task i grades shard i/N of the class."""
    from autograder.cluster import limits

    largest = max(limits.shard_sizes(students, args.shards))
    extra = [f"--array=0-{args.shards - 1}", *(["--gres=gpu:1"] if args.gpu else [])]
    lines = directives(f"{JOB_NAME}-grade", cpus=args.jobs * args.cpus_per_job,
                       memory_bytes=limits.shard_memory_bytes(args.jobs),
                       seconds=limits.shard_seconds(largest, args.jobs),
                       log=args.out.absolute() / "logs" / "grade-%A_%a.out",
                       partition=args.partition, extra=extra)
    command = [args.python, "-m", "autograder", "batch", str(args.course.absolute()), "--shard",
               f"/{args.shards}", "--jobs", str(args.jobs), "--device", "cuda" if args.gpu else "cpu",
               "--data", str(args.data.absolute()), *(["--allow-unsandboxed"] if args.allow_unsandboxed else [])]
    return _script(f"One task per shard ({students} students, at most {largest} per shard, "
                   f"{args.jobs} at a time).", lines, command)


def merge_script(args, students: int) -> str:
    """merge.sbatch: the class's files from the stored results (submit.sh makes it wait)."""
    from autograder.cluster import limits

    lines = directives(f"{JOB_NAME}-merge", cpus=1, memory_bytes=2 * limits.BATCH_PROCESS_BYTES,
                       seconds=MERGE_SECONDS + students * MERGE_SECONDS_PER_STUDENT,
                       log=args.out.absolute() / "logs" / "merge-%j.out", partition=args.partition)
    command = [args.python, "-m", "autograder", "merge", str(args.course.absolute()),
               "--data", str(args.data.absolute()), *(["--no-gradebook"] if args.no_gradebook else [])]
    return _script("After every shard, however it ended: grades nothing; exit 4 lists students "
                   "without a result.", lines, command)


def _script(what: str, lines: list[str], command: list[str]) -> str:
    return "\n".join(["#!/bin/bash", *lines, "# Written by `python -m autograder slurm`. " + what,
                      "set -euo pipefail", "exec " + shlex.join(command), ""])


SUBMIT = """#!/bin/bash
# Submits the shards as one array job, then the merge once all of them have ended.
# Arguments go to both sbatch calls (e.g. --account=...).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$here/logs"
array="$(sbatch --parsable "$@" "$here/grade.sbatch")"
array="${array%%;*}"  # --parsable prints JOBID or JOBID;CLUSTER
merge="$(sbatch --parsable "$@" --dependency=afterany:"$array" "$here/merge.sbatch")"
echo "shards: array job $array; merge: job ${merge%%;*} (after the array, however it ends)"
"""


def write_scripts(args) -> list[Path]:
    """grade.sbatch, merge.sbatch and submit.sh in args.out; ValueError for bad arguments."""
    from autograder.cluster import limits

    students = limits.class_size(args.course)
    limits.check_shards(args.shards, students)
    if args.jobs < 1 or args.cpus_per_job < 1:
        raise ValueError("--jobs and --cpus-per-job must be at least 1 (a task grades in processes of its own)")
    out = args.out
    (out / "logs").mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("grade.sbatch", grade_script(args, students)),
                       ("merge.sbatch", merge_script(args, students)), ("submit.sh", SUBMIT)):
        (out / name).write_text(text)
        (out / name).chmod(0o755)
        written.append(out / name)
    return written


def run(args) -> int:
    """The command: write the scripts, make sure every task will share one secret."""
    from autograder import grade

    try:
        written = write_scripts(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    grade.grader_secret()  # $CAPTIONING_GRADER_SECRET, else the file, created now if missing
    print(f"wrote {', '.join(str(p) for p in written)}\nsubmit with: {written[-1]}")
    return 0
