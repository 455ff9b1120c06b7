"""Command line of the grader.

    python -m autograder grade SUBMISSION [--results results.json] [--device cpu|cuda|auto]
                               [--data data/coco.pt] [--allow-unsandboxed]

    python -m autograder batch COURSE_DIR [--jobs N] [--force] [--student ID ...]
                                          [--shard I/N | --shard /N]
                                          (a whole class, or one slice of it; see batch.py)
    python -m autograder merge COURSE_DIR [--no-gradebook]
                                          (after the shards: the class's files; grades nothing)
    python -m autograder slurm COURSE_DIR --shards N ...       (see autograder/cluster/)
    python -m autograder kubernetes COURSE_DIR --shards N ...
    python -m autograder classroom results.json            (GitHub Classroom's payload)
    python -m autograder similarity COURSE_DIR [--reference-corpus DIR] [--out DIR]
                                          (which submissions look alike; see similarity.py)
    python -m autograder mutants [--unit NAME ...] [--jobs N] [--out DIR] [--no-visible] [--list]
                                          (how good the hidden tests are; see mutants/run.py)

SUBMISSION is a notebook, or a folder: then the notebook in it is chosen by the rule of
autograder/submission.py (rnn_captioning.ipynb, else the only notebook; never one in
.ipynb_checkpoints or another hidden folder), and the results say which file was graded.

Prints a table (unit, test, points, the reason for every lost point) and writes results.json
in Gradescope's schema. Exit status:
  0  a result was recorded, whatever the score;
  2  the grader cannot grade: no such SUBMISSION path, no sandbox, a missing or unreadable
     data file, points.toml not totalling 100, an unwritable results path;
  3  NOT GRADED: a failure the student did not cause persisted (results.json says so, with
     diagnostics in extra_data); grade again.
batch exits 3 when any submission is NOT GRADED (it lists them), else as grade does.
merge exits 4 when a student has no stored result (it lists them; grade their shard
again), else 3 when any is NOT GRADED, else 0; nbgrader's gradebook is built only when
no result is missing (nbgrader would grade the missing ones itself).

--shard I/N grades the I-th (from 0) of N fixed slices of the class, sorted by student id;
--shard /N takes I from $SLURM_ARRAY_TASK_ID (a Slurm array task) or $JOB_COMPLETION_INDEX
(a Kubernetes Indexed Job), and only then: the environment never picks a shard by itself.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from autograder import DATA_FILE


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    add_grading_commands(commands)
    from autograder import cluster

    cluster.add_commands(commands)
    classroom_cmd = commands.add_parser(
        "classroom", help="print a results.json as GitHub Classroom's reporter payload (base64)")
    classroom_cmd.add_argument("results", type=Path)
    add_similarity_command(commands)
    add_mutants_command(commands)
    args = parser.parse_args(argv)
    if args.command == "similarity":
        return run_similarity(args)
    if args.command == "classroom":
        from autograder.reports import classroom_payload

        print(classroom_payload(json.loads(args.results.read_text())))
        return 0
    if hasattr(args, "run"):  # the cluster's commands write files; they grade nothing
        return args.run(args)
    if not args.data.is_file():
        print(f"error: the data file {args.data} is missing: run `make data`", file=sys.stderr)
        return 2
    return {"batch": run_batch, "merge": run_merge}.get(args.command, run_grade)(args)


def add_grading_commands(commands) -> None:
    """`grade`, `batch` and `merge`: the commands that grade, or read what was graded."""
    grade_cmd = commands.add_parser("grade", help="grade one submitted notebook")
    grade_cmd.add_argument("notebook", type=Path)
    grade_cmd.add_argument("--results", type=Path, default=Path("results.json"))
    batch_cmd = commands.add_parser("batch", help="grade every submission of a course directory")
    batch_cmd.add_argument("course", type=Path, help="the nbgrader course directory (assignment/)")
    batch_cmd.add_argument("--jobs", type=int, default=1,
                           help="submissions graded at once (0: one at a time in this process, "
                                "for debugging)")
    batch_cmd.add_argument("--force", action="store_true",
                           help="grade every submission again (ignore every stored result)")
    batch_cmd.add_argument("--student", action="append", default=[], metavar="ID",
                           help="grade this student's submission again (repeatable)")
    batch_cmd.add_argument("--shard", type=shard_argument, metavar="I/N",
                           help="grade only the I-th (from 0) of N slices of the class; /N: I from "
                                "$SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX")
    for command in (grade_cmd, batch_cmd):
        command.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
        command.add_argument("--data", type=Path, default=DATA_FILE)
        command.add_argument("--allow-unsandboxed", action="store_true",
                             help="grade even where bubblewrap cannot run (weaker isolation; "
                                  "the results say so)")
    add_merge_command(commands)


def add_similarity_command(commands) -> None:
    """`similarity COURSE_DIR [--reference-corpus DIR] [--out DIR]` (autograder/similarity.py)."""
    similarity_cmd = commands.add_parser(
        "similarity", help="which submissions look alike: an HTML report and a CSV, for a person to review")
    similarity_cmd.add_argument("course", type=Path, help="the nbgrader course directory (assignment/)")
    similarity_cmd.add_argument("--reference-corpus", type=Path, metavar="DIR",
                                help="known public solutions (.py, .ipynb) to compare every submission with")
    similarity_cmd.add_argument("--out", type=Path, help="where to write (default COURSE_DIR/similarity/)")


def add_mutants_command(commands) -> None:
    """`mutants [--unit NAME ...]`: mutation analysis of the hidden tests (mutants/run.py)."""
    command = commands.add_parser("mutants", help="mutation analysis of the hidden tests: which plausible bugs "
                                  "would score full points (an HTML report and CSVs)")
    command.add_argument("--unit", action="append", default=[], metavar="NAME",
                         help="only this graded unit's mutants (repeatable)")
    command.add_argument("--jobs", type=int, default=2, help="mutants graded at once")
    # Not imported here: mutants/ stays with the instructor (Gradescope's zip has no copy of it).
    command.add_argument("--out", type=Path,
                         help="where to write (default mutants/out/, git-ignored: it holds the reference's code)")
    command.add_argument("--no-visible", action="store_true", help="do not run the notebook's visible checks")
    command.add_argument("--list", action="store_true", help="list the mutants, grade nothing")
    command.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    command.add_argument("--data", type=Path, default=DATA_FILE)
    command.set_defaults(run=run_mutants)


def run_mutants(args) -> int:
    from mutants import run

    return run.main(args)


NOT_GRADED_EXIT = 3
MISSING_EXIT = 4


def add_merge_command(commands) -> None:
    """`merge`: after sharded batches, the class's files from the stored results."""
    merge_cmd = commands.add_parser("merge", help="after sharded batches: the class's CSV and "
                                    "gradebook from the stored results (grades nothing)")
    merge_cmd.add_argument("course", type=Path)
    merge_cmd.add_argument("--data", type=Path, default=DATA_FILE)
    merge_cmd.add_argument("--no-gradebook", action="store_true",
                           help="write class_results.csv only (no nbgrader autograde and export)")


def shard_argument(spec: str):
    """--shard's value as a batch.Shard; argparse reports a bad one with the reason."""
    from autograder.batch import parse_shard

    try:
        return parse_shard(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_grade(args) -> int:
    """Grades one submission (the grade command); returns the exit status."""
    if not args.notebook.exists():
        print(f"error: {args.notebook} does not exist (give the path of a submitted notebook, "
              "or of a folder holding one)", file=sys.stderr)
        return 2
    from autograder import sandbox

    # The warm worker starts first (its torch import is the critical path), then the sandbox.
    started = None
    if sandbox.sandbox_status()[0] or args.allow_unsandboxed:
        sandbox.start_zygote()
        from autograder.submission_sandbox import SubmissionSandbox

        started = SubmissionSandbox(args.allow_unsandboxed)
    try:
        import torch

        from autograder import batch
        from autograder.grade import GraderError
        from autograder.reports import write_results
        from autograder.submission import NOTEBOOK_NAME, find_notebook

        torch.set_num_threads(batch.GRADER_THREADS)
        try:
            batch.check_points()
            coco = batch.load_data(args.data)
            notebook, note = (find_notebook(args.notebook, NOTEBOOK_NAME) if args.notebook.is_dir()
                              else (args.notebook, ""))
            result = _grade_found(notebook, note, coco, args, started)
        except GraderError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # a bug of the grader on this submission: not the student's
            result = _grader_failure(exc, args.device)
        try:
            write_results(result, args.results)
        except OSError as exc:
            print(f"error: cannot write {args.results}: {exc.strerror}", file=sys.stderr)
            return 2
    finally:
        if started is not None:
            started.close()
    return _report(result, args.results)


def _grade_found(notebook: Path | None, note: str, coco, args, started):
    """The result of the notebook found in the submission, or, when none was (notebook None), a
    0 saying why; GraderError when student code cannot be sandboxed."""
    from autograder import batch, sandbox
    from autograder.grade import GraderError, grade

    if notebook is None:  # the student's problem: a 0 with the reason
        available, why = sandbox.sandbox_status()
        if not available and not args.allow_unsandboxed:
            raise GraderError(f"cannot sandbox student code: {why}")
        result = batch.nothing_to_grade(note, args.device)
        result.mode = "bwrap" if available else "unsandboxed"
        return result
    return batch.with_note(grade(notebook, coco=coco, device=args.device,
                                 allow_unsandboxed=args.allow_unsandboxed, started=started), note)


def _grader_failure(exc: Exception, device: str):
    """The NOT GRADED result of the grader failing with exc (call it while exc is handled: its
    traceback goes into the result)."""
    import traceback

    from autograder import batch

    return batch.not_graded(f"the grader failed on this submission ({type(exc).__name__}: "
                            f"{str(exc)[:200]})", {"traceback": traceback.format_exc()[-4000:]}, device)


def _report(result, results_path: Path) -> int:
    """Prints the result's table (and, when NOT GRADED, why); returns the exit status."""
    from autograder import batch
    from autograder.reports import table

    text = table(result)
    if batch.is_not_graded(result):
        reason = batch.not_graded_reason(result).removeprefix("NOT GRADED: ")
        if "NOT GRADED" not in text.splitlines()[0]:
            text = f"NOT GRADED: {reason}\n{text}"
        print(text)
        print(f"NOT GRADED: {reason}. No score was recorded; grade again. Diagnostics: "
              f"{results_path} (extra_data)", file=sys.stderr)
        return NOT_GRADED_EXIT
    print(text)
    print(f"results written to {results_path}")
    return 0


def run_batch(args) -> int:
    from autograder.batch import CLASS_CSV, grade_class, is_not_graded, not_graded_reason
    from autograder.grade import GraderError

    try:
        outcomes = grade_class(args.course, jobs=args.jobs, data=args.data, device=args.device,
                               allow_unsandboxed=args.allow_unsandboxed, force=args.force,
                               students=tuple(args.student), shard=args.shard)
    except GraderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: every result written so far is complete; run again to resume",
              file=sys.stderr)
        return 130
    not_graded = {s: o for s, o in outcomes.items() if is_not_graded(o)}
    nothing = {s: o for s, o in outcomes.items() if s not in not_graded and not o.mode}
    for student, outcome in sorted(nothing.items()):
        print(f"{student}: 0: {outcome.notes[0] if outcome.notes else 'nothing to grade'}", file=sys.stderr)
    for student, outcome in sorted(not_graded.items()):
        print(f"{student}: NOT GRADED: {not_graded_reason(outcome).removeprefix('NOT GRADED: ')}",
              file=sys.stderr)
    written = f"shard {args.shard} (the class's files: `merge`)" if args.shard else args.course / CLASS_CSV
    print(f"{len(outcomes) - len(not_graded)} graded ({len(nothing)} with nothing to grade), "
          f"{len(not_graded)} NOT GRADED; {written}")
    if not_graded:
        print("NOT GRADED submissions have no score: run the batch again (it grades them again), "
              "or see README, 'When something goes wrong'", file=sys.stderr)
        return NOT_GRADED_EXIT
    return 0


def run_similarity(args) -> int:
    """The similarity report of a class: 0 when written, 2 when it cannot be (no such
    folder, an unwritable output)."""
    from autograder.similarity import similarity_report

    for folder, what in ((args.course, "course directory"), (args.reference_corpus, "reference corpus")):
        if folder is not None and not folder.is_dir():
            print(f"error: the {what} {folder} is not a folder", file=sys.stderr)
            return 2
    try:
        report = similarity_report(args.course, args.reference_corpus, args.out)
    except OSError as exc:
        print(f"error: cannot write the report: {exc.strerror or exc}", file=sys.stderr)
        return 2
    unread = sum(1 for s in report.students if s.problem)
    print(f"{len(report.students) - unread} submissions compared ({unread} not), {len(report.pairs)} pairs; "
          f"similarity is evidence to review, never a verdict")
    for path in report.files:
        print(path)
    return 0


def run_merge(args) -> int:
    """The class's files from every stored result; the gradebook when none is missing."""
    from autograder.batch import CLASS_CSV, MISSING, is_not_graded, merge_class, not_graded_reason
    from autograder.grade import GraderError

    try:
        outcomes = merge_class(args.course, data=args.data)
    except GraderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing = sorted(s for s, o in outcomes.items() if o.status == MISSING)
    not_graded = sorted(s for s, o in outcomes.items() if is_not_graded(o))
    for student in not_graded:
        print(f"{student}: NOT GRADED: {not_graded_reason(outcomes[student]).removeprefix('NOT GRADED: ')}",
              file=sys.stderr)
    for student in missing:
        print(f"{student}: no stored result (its shard has not run or did not finish)", file=sys.stderr)
    print(f"{len(outcomes) - len(missing) - len(not_graded)} graded, {len(not_graded)} NOT GRADED, "
          f"{len(missing)} missing; {args.course / CLASS_CSV}")
    if missing:
        print("error: grade the shards of the students above again (each grades only what is "
              "missing), then merge again; the gradebook was left as it was", file=sys.stderr)
        return MISSING_EXIT
    if not args.no_gradebook:
        from autograder import cluster

        status = cluster.build_gradebook(args.course)
        if status:
            return status
    return NOT_GRADED_EXIT if not_graded else 0


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
