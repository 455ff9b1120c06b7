"""Every catalogue submission's results, written so that two versions of the grader compare.

    python -m benchmarks.catalogue_results OUT_DIR [--only buggy,correct,adversarial,isolation]

Grades each submission of tests/catalogue/ (the buggy, correct, adversarial and isolation
catalogues, as their tests write them, with the tests' secret and the adversarial tests'
screen turned off) and writes OUT_DIR/<catalogue>-<id>.json: every test's score and reason,
the notes, the status and the sandbox mode, with the timings left out (seconds vary). Run it
on two checkouts and compare: ``diff -r OLD_DIR NEW_DIR`` prints nothing when every
per-test result is the same. The grading time of each catalogue is printed.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from autograder import REPO_ROOT

sys.path[:0] = [str(REPO_ROOT / "tests")]

from catalogue import adversarial, buggy, correct, isolation_attacks  # noqa: E402
from grading import grade_notebook, write_submission  # noqa: E402

from autograder import forbidden, submission_sandbox  # noqa: E402


def submissions(scratch: Path, only: set[str]):
    """(catalogue, id, notebook path, unit timeout or None) of every submission."""
    if "buggy" in only:
        for bug in buggy.BUGS:
            yield "buggy", bug.id, write_submission(scratch / f"{bug.id}.ipynb", bug.submission()), None
    if "correct" in only:
        for variant in correct.VARIANTS:
            yield "correct", variant.id, write_submission(scratch / f"{variant.id}.ipynb", variant.cells), None
    for name, catalogue in (("adversarial", adversarial), ("isolation", isolation_attacks)):
        if name in only:
            for sub in catalogue.SUBMISSIONS:
                path = adversarial.write_notebook(scratch / f"{sub.id}.ipynb", sub.cells(), sub.omit, sub.outputs_mb)
                yield name, sub.id, path, sub.unit_timeout


def comparable(result) -> dict:
    """What decides and explains points, without the timings."""
    return {"status": result.status, "mode": result.mode, "notes": result.notes,
            "tests": [[t.unit, t.test, t.score, t.max_score, t.reason] for t in result.tests]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--only", default="buggy,correct,adversarial,isolation")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    screen, unit_seconds = forbidden.find_forbidden_in_cells, submission_sandbox.UNIT_SECONDS
    spent: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="catalogue-") as scratch:
        for name, sub_id, notebook, unit_timeout in submissions(Path(scratch), set(args.only.split(","))):
            # As tests/test_adversarial_submissions.py grades them: the sandbox must hold alone.
            adversarial_run = name in ("adversarial", "isolation")
            forbidden.find_forbidden_in_cells = ((lambda cells, preamble="": {u: [] for u in cells})
                                                 if adversarial_run else screen)
            submission_sandbox.UNIT_SECONDS = unit_timeout or unit_seconds
            started = time.monotonic()
            result = grade_notebook(notebook)
            spent[name] = spent.get(name, 0.0) + time.monotonic() - started
            (args.out / f"{name}-{sub_id}.json").write_text(json.dumps(comparable(result), indent=1) + "\n")
            print(f"{name:<12} {sub_id:<50} {result.score:5.1f}/{result.max_score}", flush=True)
    forbidden.find_forbidden_in_cells, submission_sandbox.UNIT_SECONDS = screen, unit_seconds
    for name, seconds in spent.items():
        print(f"{name}: graded in {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
