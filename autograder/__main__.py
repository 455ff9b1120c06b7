"""Command line of the grader.

    python -m autograder grade SUBMISSION.ipynb [--results results.json] [--device cpu|cuda|auto]
                               [--data data/coco.pt] [--allow-unsandboxed]

    python -m autograder batch COURSE_DIR [--jobs N]       (a whole class; see batch.py)
    python -m autograder classroom results.json            (GitHub Classroom's payload)

Prints a table (unit, test, points, the reason for every lost point) and writes results.json
in Gradescope's schema. Exit status 0 whenever a result was recorded, whatever the score;
2 when the grader itself cannot grade (no sandbox, no data, an unwritable results path).
"""

import argparse
import base64
import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    grade_cmd = commands.add_parser("grade", help="grade one submitted notebook")
    grade_cmd.add_argument("notebook", type=Path)
    grade_cmd.add_argument("--results", type=Path, default=Path("results.json"))
    grade_cmd.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    grade_cmd.add_argument("--data", type=Path, default=REPO_ROOT / "data" / "coco.pt")
    grade_cmd.add_argument("--allow-unsandboxed", action="store_true",
                           help="grade even where bubblewrap cannot run (weaker isolation; "
                                "the results say so)")
    batch_cmd = commands.add_parser("batch", help="grade every submission of a course directory")
    batch_cmd.add_argument("course", type=Path, help="the nbgrader course directory (assignment/)")
    batch_cmd.add_argument("--jobs", type=int, default=1, help="submissions graded at once")
    batch_cmd.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    batch_cmd.add_argument("--data", type=Path, default=REPO_ROOT / "data" / "coco.pt")
    batch_cmd.add_argument("--allow-unsandboxed", action="store_true")
    classroom_cmd = commands.add_parser(
        "classroom", help="print a results.json as GitHub Classroom's reporter payload (base64)")
    classroom_cmd.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    if args.command == "classroom":
        print(classroom_payload(json.loads(args.results.read_text())))
        return 0
    if not args.data.is_file():
        print(f"error: {args.data} is missing: run `make data`", file=sys.stderr)
        return 2
    if args.command == "batch":
        return run_batch(args)

    return run_grade(args)


def run_grade(args) -> int:
    from autograder import sandbox
    from autograder.workers import Workers

    # The sandbox starts first: its torch import runs beside this process's own.
    workers = None
    if sandbox.sandbox_status()[0] or args.allow_unsandboxed:
        workers = Workers(args.allow_unsandboxed)
    try:
        import torch

        from autograder.grade import GraderError, grade, table, write_results

        try:
            coco = torch.load(args.data, weights_only=True)
            result = grade(args.notebook, coco=coco, device=args.device,
                           allow_unsandboxed=args.allow_unsandboxed, workers=workers)
            write_results(result, args.results)
        except GraderError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"error: cannot write {args.results}: {exc.strerror}", file=sys.stderr)
            return 2
    finally:
        if workers is not None:
            workers.close()
    print(table(result))
    print(f"results written to {args.results}")
    return 0


def classroom_payload(results: dict) -> str:
    """GitHub Classroom's grading reporter reads a runner's result as base64-encoded JSON."""
    tests = [{"name": t["name"], "status": "pass" if t["score"] == t["max_score"] else "fail",
              "score": t["score"], "message": t["output"], "test_code": "", "filename": "",
              "line_no": 0, "execution_time": ""} for t in results["tests"]]
    payload = {"version": 1, "max_score": results["max_score"], "tests": tests,
               "status": "pass" if results["score"] == results["max_score"] else "fail"}
    return base64.b64encode(json.dumps(payload).encode()).decode()


def run_batch(args) -> int:
    from autograder.batch import CLASS_CSV, grade_class
    from autograder.grade import GraderError

    try:
        outcomes = grade_class(args.course, jobs=args.jobs, data=args.data, device=args.device,
                               allow_unsandboxed=args.allow_unsandboxed)
    except GraderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: every result written so far is complete; run again to resume",
              file=sys.stderr)
        return 130
    errors = {s: o for s, o in outcomes.items() if isinstance(o, str)}
    for student, error in sorted(errors.items()):
        print(f"{student}: not graded: {error}", file=sys.stderr)
    print(f"{len(outcomes) - len(errors)} graded, {len(errors)} not graded; "
          f"{args.course / CLASS_CSV}")
    return 0


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown, which takes about a second once torch and
    torchvision are loaded; everything `grade` writes is written and closed by now."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    code = main()
    if sys.argv[1:2] == ["grade"]:
        exit_now(code)
    sys.exit(code)  # batch: its process pool must shut down the usual way
