"""Grading a class past one machine, with the engines a university already runs.

Nothing here schedules anything: a cluster runs ``python -m autograder batch COURSE --shard
/N`` once per shard (a Slurm array task, a Kubernetes Indexed Job's pod), each storing its
results in the shared course directory as a batch on one machine does, and then ``python -m
autograder merge COURSE`` once. This package writes those jobs' files:

* ``slurm.py``: ``python -m autograder slurm COURSE --shards N``: an sbatch array script, a
  dependent merge job and the script that submits both;
* ``kubernetes.py``: ``python -m autograder kubernetes COURSE --shards N --image IMAGE``: an
  Indexed Job and a merge Job; ``image/`` builds the container image they run;
* ``prairielearn.py``: PrairieLearn's external-grader entrypoint (one submission).

What one shard needs (CPUs, memory, time) is derived here from the limits the grader
declares (autograder/submission_sandbox.py, reference_service.py, batch.py), never restated:
``limits.py``.
"""

import os
import subprocess
import sys
from pathlib import Path

# Light on purpose: `python -m autograder` builds its parser from here for every command,
# and `grade` starts its sandbox before it imports torch (which batch and submission_sandbox do).


def build_gradebook(course: Path) -> int:
    """nbgrader autograde (from the stored results) and export, as `make autograde` runs
    them; skipped, with a note, when course is not an nbgrader course directory."""
    from autograder.batch import ASSIGNMENT, RESULTS_DIR

    course = Path(course)
    if not (course / "nbgrader_config.py").is_file():
        print(f"note: no nbgrader_config.py in {course}: gradebook not built (class_results.csv only)",
              file=sys.stderr)
        return 0
    # nbgrader runs helper programs (alembic) by name: this interpreter's bin comes first.
    # The course's nbgrader_config.py imports autograder: found beside the course in the
    # repository, but a course elsewhere (a Kubernetes volume at /course) needs the path.
    from autograder import REPO_ROOT

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    nbgrader = [sys.executable, "-m", "nbgrader"]
    autograde = subprocess.run([*nbgrader, "autograde", ASSIGNMENT, "--force", "--log-level=WARN",
                                "--CourseDirectory.submitted_directory="
                                f"{RESULTS_DIR}/nbgrader_input"], cwd=course, env=env)
    if autograde.returncode:
        print("error: nbgrader autograde failed (above); exporting what the gradebook holds", file=sys.stderr)
    export = subprocess.run([*nbgrader, "export", "--to", "grades.csv"], cwd=course, env=env)
    if export.returncode:
        return export.returncode
    print(f"Grades: {course / 'grades.csv'} (gradebook: {course / 'gradebook.db'})")
    return 1 if autograde.returncode else 0


def add_commands(commands) -> None:
    """The cluster's subcommands of `python -m autograder` (each sets args.run)."""
    from autograder.cluster import kubernetes, slurm

    slurm.add_command(commands)
    kubernetes.add_command(commands)
