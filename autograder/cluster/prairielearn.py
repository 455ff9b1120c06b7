"""PrairieLearn's external grader: grade /grade/student/ into /grade/results/results.json.

    python3 -m autograder.cluster.prairielearn [--student DIR] [--results FILE]

A question's info.json, with the image of autograder/cluster/image/ (README, "Grading on a
cluster"):

    "externalGradingOptions": {"enabled": true, "image": "captioning-grader",
        "entrypoint": "python3 -m autograder.cluster.prairielearn", "timeout": 600,
        "serverFilesCourse": ["captioning_grader_secret"]}

The submission is graded by ``python -m autograder grade`` (the same notebook rule, sandbox
and hidden inputs as everywhere), whose results (Gradescope's schema) become PrairieLearn's:
``score`` from 0 to 1, a ``tests`` entry per test (name, points, max_points, message: what
was lost and why, or "passed"). A submission this kit cannot grade for a reason that is not
the student's (NOT GRADED, or a grader that cannot work) gets ``"gradable": false``:
PrairieLearn then awards and takes no points and charges no attempt. Diagnostics go to this
program's output, which PrairieLearn shows to course staff only.

The secret (the same for every grading job, or the hidden inputs would change between jobs)
comes from $CAPTIONING_GRADER_SECRET, else from the file --secret-file (by default
serverFilesCourse/captioning_grader_secret, which only course staff can read); with
neither, nothing is graded (gradable: false).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from autograder import DATA_FILE, REPO_ROOT

GRADE_ROOT = Path("/grade")
SECRET_FILE = GRADE_ROOT / "serverFilesCourse" / "captioning_grader_secret"
NOT_GRADED_EXIT = 3  # autograder/__main__.py's
# The grader's own time per submission is far below PrairieLearn's largest timeout (600 s):
# stop it in time to write a gradable: false result rather than be killed without one.
GRADE_TIMEOUT_SECONDS = 540


def pl_results(kit: dict) -> dict:
    """PrairieLearn's results.json from the kit's (Gradescope's schema) for a graded submission."""
    tests = [{"name": t["name"], "points": t["score"], "max_points": t["max_score"],
              "message": t["output"],
              "output": ""}  # the reason is the message: the kit keeps no per-test console output
             for t in kit["tests"]]
    return {"gradable": True, "score": kit["score"] / kit["max_score"],
            "message": kit["output"].splitlines()[0], "output": kit["output"], "tests": tests}


def not_gradable(message: str) -> dict:
    """No score: PrairieLearn awards none, takes none, and charges no attempt."""
    return {"gradable": False, "score": 0.0, "message": message, "output": message, "tests": []}


def secret_env(secret_file: Path) -> dict | None:
    """The grader's environment with its secret, or None when there is no secret."""
    if os.environ.get("CAPTIONING_GRADER_SECRET"):
        return dict(os.environ)
    if secret_file.is_file():
        return {**os.environ, "CAPTIONING_GRADER_SECRET": secret_file.read_text().strip()}
    return None


def grade(args) -> dict:
    """Grade args.student with the kit's command line; PrairieLearn's results."""
    env = secret_env(args.secret_file)
    if env is None:
        return not_gradable(f"NOT GRADED: the grader has no secret (set CAPTIONING_GRADER_SECRET or "
                            f"provide {args.secret_file}); course staff must fix the question")
    with tempfile.TemporaryDirectory(prefix="captioning-pl-") as work:
        kit_results = Path(work) / "results.json"
        command = [args.python, "-m", "autograder", "grade", str(args.student), "--results", str(kit_results),
                   "--data", str(args.data), *(["--allow-unsandboxed"] if args.allow_unsandboxed else [])]
        try:
            done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                                  timeout=GRADE_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            return not_gradable(f"NOT GRADED: grading took over {GRADE_TIMEOUT_SECONDS} s (a busy "
                                "grading machine); submit again")
        print(done.stdout + done.stderr)  # PrairieLearn shows this to course staff
        if done.returncode == 0:
            return pl_results(json.loads(kit_results.read_text()))
    if done.returncode == NOT_GRADED_EXIT:
        return not_gradable("NOT GRADED: a failure of the grading machine, not of your code; "
                            "submit again (this attempt is not counted)")
    return not_gradable("NOT GRADED: the grader could not run (course staff: see this job's output)")


def main(argv=None) -> int:
    """Grade, write results.json whatever happened, exit 0 (PrairieLearn reads the file)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, default=GRADE_ROOT / "student")
    parser.add_argument("--results", type=Path, default=GRADE_ROOT / "results" / "results.json")
    parser.add_argument("--secret-file", type=Path, default=SECRET_FILE)
    parser.add_argument("--data", type=Path, default=DATA_FILE)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--allow-unsandboxed", action="store_true",
                        help="where the grading container cannot run bubblewrap (results say so)")
    args = parser.parse_args(argv)
    results = grade(args)
    args.results.parent.mkdir(parents=True, exist_ok=True)  # PrairieLearn does not create it
    args.results.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results written to {args.results} (gradable: {results['gradable']}, score: {results['score']:.2f})")
    return 0  # a results.json was written: PrairieLearn reads it whatever the grading gave


if __name__ == "__main__":
    sys.exit(main())
