"""Grading a whole class: in parallel, resumable, one broken submission never stops it.

    python -m autograder batch COURSE_DIR [--jobs N] [--device cpu|cuda|auto]

Submissions are nbgrader's: COURSE_DIR/submitted/<student>/rnn_captioning/rnn_captioning.ipynb.
Each result is stored in COURSE_DIR/grader_results/<student>.json under a key made of what
is graded (the solution cells), the grader's own code and points, and the secret: a
submission already graded with the same key is not graded again. Results are written
whole (a temporary file, then a rename), so an interrupted run leaves no half-written file
and the next run picks up where it stopped. At the end, COURSE_DIR/class_results.csv has a
row per student and a column per test. `nbgrader autograde` then copies the stored results
into the gradebook without grading again (autograder/nbgrader_autograde.py).
"""

import csv
import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from autograder import checks, grade
from autograder.submission import SubmissionError, read_solution_cells

ASSIGNMENT = "rnn_captioning"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"
RESULTS_DIR = "grader_results"
CLASS_CSV = "class_results.csv"
_GRADER_FILES = ("checks.py", "grade.py", "runners.py", "worker.py", "forbidden.py",
                 "submission.py", "sandbox.py", "points.toml")


def grader_fingerprint(secret: bytes) -> str:
    """Changes whenever the grader, the points, the reference or the secret change."""
    digest = hashlib.sha256(secret)
    for path in [grade.AUTOGRADER_DIR / name for name in _GRADER_FILES] + [
            grade.AUTOGRADER_DIR.parent / "solution" / "captioning.py"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def submission_key(notebook: Path, fingerprint: str) -> str:
    """What the result of this notebook depends on, hashed."""
    try:
        cells, _ = read_solution_cells(notebook, grade.UNITS)
        graded = json.dumps(cells, sort_keys=True)
    except SubmissionError:
        graded = hashlib.sha256(Path(notebook).read_bytes()).hexdigest()
    return hashlib.sha256(f"{fingerprint}\n{graded}".encode()).hexdigest()


def result_to_dict(result: grade.GradeResult) -> dict:
    return dataclasses.asdict(result)


def result_from_dict(data: dict) -> grade.GradeResult:
    tests = [grade.TestResult(**t) for t in data["tests"]]
    return grade.GradeResult(tests, data["notes"], data["mode"], data["device"])


class ResultStore:
    """<results dir>/<student>.json: {"key": ..., "result": ...}."""

    def __init__(self, results_dir: Path):
        self.dir = Path(results_dir)

    def get(self, student: str, key: str) -> grade.GradeResult | None:
        try:
            stored = json.loads((self.dir / f"{student}.json").read_text())
            return result_from_dict(stored["result"]) if stored.get("key") == key else None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing or unreadable: grade again

    def put(self, student: str, key: str, result: grade.GradeResult) -> None:
        self.dir.mkdir(exist_ok=True)
        path = self.dir / f"{student}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "result": result_to_dict(result)}, indent=1))
        os.replace(tmp, path)


def find_submissions(course_dir: Path) -> list[tuple[str, Path]]:
    """(student, notebook) of every submission, by student id."""
    submitted = Path(course_dir) / "submitted"
    found = []
    for student_dir in sorted(submitted.iterdir()) if submitted.is_dir() else []:
        notebook = student_dir / ASSIGNMENT / NOTEBOOK
        if student_dir.is_dir():
            found.append((student_dir.name, notebook))
    return found


# ---------------------------------------------------------------------------------------
# Worker processes of the batch (each imports torch and loads the data once)
# ---------------------------------------------------------------------------------------

_state = {}


def _init_process(data: str, device: str, allow_unsandboxed: bool, threads: int) -> None:
    import torch

    # JOBS processes each with a thread per core would oversubscribe the CPUs, and OpenMP's
    # spinning threads then slow everything down (JOBS=2 was slower than JOBS=1 here).
    torch.set_num_threads(threads)
    coco = torch.load(data, weights_only=True)
    _state.update(coco=coco, fixture=checks.CaptionerFixture(coco), device=device,
                  allow_unsandboxed=allow_unsandboxed)


def _grade_one(student: str, notebook: Path) -> tuple[str, dict | None, str | None]:
    """(student, result as a dict, or None and the error that stopped this submission)."""
    try:
        result = grade.grade(notebook, coco=_state["coco"], fixture=_state["fixture"],
                             device=_state["device"], allow_unsandboxed=_state["allow_unsandboxed"])
        return student, result_to_dict(result), None
    except grade.GraderError:
        raise  # the grader cannot work at all: stop the batch
    except Exception as exc:  # this submission broke the grader: record it, go on
        return student, None, f"{type(exc).__name__}: {exc}"


def grade_class(course_dir: Path, *, jobs: int = 1, data: Path, device: str = "cpu",
                allow_unsandboxed: bool = False, progress: bool = True) -> dict:
    """Grade every submission not already graded; returns {student: result or error str}."""
    secret = grade.grader_secret()
    fingerprint = grader_fingerprint(secret)
    store = ResultStore(Path(course_dir) / RESULTS_DIR)
    outcomes, todo = {}, []
    for student, notebook in find_submissions(course_dir):
        key = submission_key(notebook, fingerprint) if notebook.is_file() else None
        cached = store.get(student, key) if key else None
        if key is None:
            outcomes[student] = f"no {NOTEBOOK} in submitted/{student}/{ASSIGNMENT}/"
        elif cached is not None:
            outcomes[student] = cached
        else:
            todo.append((student, notebook, key))
    print(f"{len(outcomes)} already graded or missing, {len(todo)} to grade with {jobs} job(s)",
          file=sys.stderr)

    if todo:
        _grade_in_parallel(todo, store, outcomes, jobs=jobs, progress=progress,
                           initargs=(str(data), device, allow_unsandboxed,
                                     max(1, (os.cpu_count() or 1) // max(1, jobs))))
    write_class_csv(Path(course_dir) / CLASS_CSV, outcomes)
    return outcomes


def _grade_in_parallel(todo, store: ResultStore, outcomes: dict, *, jobs: int, progress: bool,
                       initargs: tuple) -> None:
    """Grade todo [(student, notebook, key)] in jobs processes; store each result as it comes."""
    from tqdm import tqdm

    context = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited threads
    pool = ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=context,
                               initializer=_init_process, initargs=initargs)
    keys = {student: key for student, _, key in todo}
    futures = [pool.submit(_grade_one, student, notebook) for student, notebook, _ in todo]
    try:
        for future in tqdm(as_completed(futures), total=len(futures), disable=not progress,
                           desc="grading", unit="submission"):
            student, result, error = future.result()
            if result is not None:
                graded = result_from_dict(result)
                store.put(student, keys[student], graded)
                outcomes[student] = graded
            else:
                outcomes[student] = error
    except BaseException:
        # Ctrl-C or a fatal grader error: drop what has not started and do not wait for the
        # rest; every stored result is already complete.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def write_class_csv(path: Path, outcomes: dict) -> None:
    """A row per student: total, every test's points, and an error column."""
    points = checks.load_points()
    columns = [f"{unit}.{test}" for unit, tests in points.items() for test in tests]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "score", "max_score", *columns, "sandbox", "error"])
        for student in sorted(outcomes):
            outcome = outcomes[student]
            if isinstance(outcome, grade.GradeResult):
                by_test = {f"{t.unit}.{t.test}": t.score for t in outcome.tests}
                writer.writerow([student, outcome.score, outcome.max_score,
                                 *[by_test.get(c, "") for c in columns], outcome.mode, ""])
            else:
                writer.writerow([student, "", 100, *[""] * len(columns), "", outcome])
    os.replace(tmp, path)
