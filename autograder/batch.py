"""Grading a whole class: in parallel, resumable, one broken submission never stops it.

    python -m autograder batch COURSE_DIR [--jobs N] [--device cpu|cuda|auto]
                                          [--force] [--student ID ...]

Submissions are nbgrader's: COURSE_DIR/submitted/<student>/rnn_captioning/, graded by the
rule of ``submission.find_notebook`` (rnn_captioning.ipynb, else the only notebook there;
never one in .ipynb_checkpoints). Every student folder gets an outcome: a result (0 with the
reason when nothing can be graded) or NOT GRADED (a failure the student did not cause).

Each result is stored in COURSE_DIR/grader_results/<student>.json under a key made of what
is graded (the solution cells), every file of the grader (autograder/*.py, *.toml),
of the reference (solution/), the data file and the secret: a submission already graded
with the same key is not graded again, unless --force (everyone) or --student ID (those
students) says so. A NOT GRADED outcome is recorded apart and never reused as a result:
the next run grades that submission again. Results are written whole (a temporary file,
then a rename), so an interrupted run leaves no half-written file.

Past one machine (see autograder/cluster/): ``--shard I/N`` grades only the I-th of N
fixed slices of the class (by student id) and stores its results as above, nothing else;
``merge_class`` (``python -m autograder merge``) then reads every stored result, grades
nothing, and writes what follows, listing every student with no stored result.

At the end: COURSE_DIR/class_results.csv (a row per student: status, score, a column per
test, the reason), and, for nbgrader, a copy of each submission that nbgrader can always
read (grader_results/nbgrader_input/, see autograder/nbgrader_autograde.py). `nbgrader
autograde` then copies the stored results into the gradebook without grading again.
"""

import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from autograder import (ASSIGNMENT, NOTEBOOK_NAME, REPO_ROOT, checks, grade, sandbox, submission_sandbox,
                        write_atomically, write_csv)
from autograder.submission import SubmissionError, find_notebook, read_solution_cells

NOTEBOOK = NOTEBOOK_NAME
RESULTS_DIR = "grader_results"
CLASS_CSV = "class_results.csv"
# The status of a student whose result merge_class did not find (a shard not run, or
# stopped before it): no score, like NOT GRADED, but nothing was even tried.
MISSING = "missing"
# Where `--shard /N` finds its index I: Slurm's array task, Kubernetes' Indexed Job.
SHARD_INDEX_VARIABLES = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")
# What the grader is made of: every file matching these, under these folders of the
# repository. The cache key hashes them, and the Gradescope zip ships them (one list).
GRADER_DIRS = ("autograder", "solution")
GRADER_PATTERNS = ("*.py", "*.toml")
DATA_KEYS = ("vocab", "val_images", "val_captions", "val_image_idxs")


def grader_files(root: Path = REPO_ROOT) -> list[str]:
    """Every file of the grader (repository-relative, sorted): *.py and *.toml under
    autograder/ and solution/, caches and hidden files (the secret) left out."""
    found = set()
    for folder in GRADER_DIRS:
        for pattern in GRADER_PATTERNS:
            for path in (root / folder).rglob(pattern):
                relative = path.relative_to(root)
                if path.is_file() and not any(part.startswith(".") or part == "__pycache__"
                                              for part in relative.parts):
                    found.add(relative.as_posix())
    return sorted(found)


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_digest(data: Path) -> str:
    """sha256 of the data file's content (computed once per file version and process)."""
    info = os.stat(data)
    return _file_digest(str(Path(data).resolve()), info.st_size, info.st_mtime_ns)


def grader_fingerprint(secret: bytes, data: Path, root: Path = REPO_ROOT) -> str:
    """Changes whenever a file of the grader or the reference, the data or the secret change."""
    digest = hashlib.sha256(b"secret\0" + secret)
    for name in grader_files(root):
        content = (root / name).read_bytes()
        digest.update(f"\0{name}\0{len(content)}\0".encode() + content)
    digest.update(f"\0data\0{data_digest(data)}".encode())
    return digest.hexdigest()


def load_data(data: Path) -> dict:
    """The COCO subset, or GraderError naming the file and what is wrong with it."""
    import torch

    data = Path(data)
    if not data.is_file():
        raise grade.GraderError(f"the data file {data} is missing: run `make data`")
    try:
        coco = torch.load(data, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, unreadable, unsafe pickle
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {str(exc)[:200]}"
        raise grade.GraderError(f"the data file {data} cannot be loaded ({what}); rebuild it "
                                "with `make data`") from None
    missing = [key for key in DATA_KEYS if not isinstance(coco, dict) or key not in coco]
    if missing:
        raise grade.GraderError(f"the data file {data} is not the captioning data set (no "
                                f"{', '.join(missing)}); rebuild it with `make data`")
    return coco


def check_points() -> None:
    """GraderError when points.toml is unreadable or does not total 100."""
    try:
        checks.load_points()
    except Exception as exc:  # tomllib.TOMLDecodeError, ValueError (the total), OSError
        message = str(exc) if str(checks.POINTS_FILE) in str(exc) else f"{checks.POINTS_FILE}: {exc}"
        raise grade.GraderError(f"{message} (fix the points, then `make notebook`)") from None


# ---------------------------------------------------------------------------------------
# Submissions, results and the store
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Submission:
    student: str
    notebook: Path | None  # the file to grade; None when there is none
    note: str  # which file was chosen, or why there is none


def locate_submission(course_dir: Path, student: str) -> Submission:
    folder = Path(course_dir) / "submitted" / student / ASSIGNMENT
    if not folder.is_dir():
        return Submission(student, None, f"nothing submitted (no folder submitted/{student}/{ASSIGNMENT}/)")
    notebook, note = find_notebook(folder, NOTEBOOK)
    # Said only when it is news: another file than the expected one, or others beside it.
    return Submission(student, notebook, "" if note == f"graded {NOTEBOOK}" else note)


def find_submissions(course_dir: Path) -> list[Submission]:
    """Every student folder of submitted/, by student id, with the notebook to grade."""
    submitted = Path(course_dir) / "submitted"
    students = sorted(p.name for p in submitted.iterdir() if p.is_dir()) if submitted.is_dir() else []
    return [locate_submission(course_dir, student) for student in students]


def submission_key(notebook: Path, fingerprint: str) -> str:
    """What the result of this notebook depends on, hashed."""
    try:
        cells, _ = read_solution_cells(notebook, grade.UNITS)
        graded = json.dumps(cells, sort_keys=True)
    except SubmissionError:
        graded = hashlib.sha256(Path(notebook).read_bytes()).hexdigest()
    return hashlib.sha256(f"{fingerprint}\n{graded}".encode()).hexdigest()


def is_not_graded(result: grade.GradeResult) -> bool:
    return getattr(result, "status", "graded") == grade.NOT_GRADED


def not_graded_reason(result: grade.GradeResult) -> str:
    """One sentence: why a NOT GRADED result has no score."""
    reasons = [t.reason for t in result.tests if t.reason]
    said = [text for text in [*result.notes, *reasons] if text.startswith("NOT GRADED")]
    return (said or reasons or result.notes or ["the grader failed"])[0]


def nothing_to_grade(reason: str, device: str = "cpu") -> grade.GradeResult:
    """0 for every test, with the reason: the student submitted nothing gradable."""
    return grade.zero_result(checks.load_points(), reason, [reason], "", device)


def not_graded(reason: str, diagnostics: dict | None = None, device: str = "cpu") -> grade.GradeResult:
    """A NOT GRADED outcome: no score; the reason says what failed (not the student)."""
    result = grade.zero_result(checks.load_points(), f"NOT GRADED: {reason}", [f"NOT GRADED: {reason}"], "", device)
    result.status = grade.NOT_GRADED
    result.diagnostics = dict(diagnostics or {})
    return result


def with_note(result: grade.GradeResult, note: str) -> grade.GradeResult:
    """The result with note first among its notes (which file was graded)."""
    if note and note not in result.notes:
        result.notes.insert(0, note)
    return result


def result_to_dict(result: grade.GradeResult) -> dict:
    return dataclasses.asdict(result)


def result_from_dict(data: dict) -> grade.GradeResult:
    tests = [grade.TestResult(**t) for t in data["tests"]]
    fields = {f.name for f in dataclasses.fields(grade.GradeResult)} - {"tests"}
    return grade.GradeResult(tests, **{k: v for k, v in data.items() if k in fields})


class ResultStore:
    """<results dir>/<student>.json: {"key": ..., "result": ...} for a result, or
    {"not_graded": {"key": ..., "result": ...}} for the last attempt that was NOT GRADED."""

    def __init__(self, results_dir: Path):
        self.dir = Path(results_dir)

    def _read(self, student: str) -> dict:
        try:
            stored = json.loads((self.dir / f"{student}.json").read_text())
            return stored if isinstance(stored, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, student: str, key: str, *, not_graded_too: bool = False) -> grade.GradeResult | None:
        """The stored result for this key; a NOT GRADED one only when asked (nbgrader shows
        what the batch found; the batch itself always tries again)."""
        stored = self._read(student)
        try:
            if stored.get("key") == key:
                return result_from_dict(stored["result"])
            if not_graded_too and stored.get("not_graded", {}).get("key") == key:
                return result_from_dict(stored["not_graded"]["result"])
        except (KeyError, TypeError, AttributeError):
            pass  # unreadable: grade again
        return None

    def put(self, student: str, key: str, result: grade.GradeResult) -> None:
        self.dir.mkdir(exist_ok=True)
        path = self.dir / f"{student}.json"
        entry = {"key": key, "result": result_to_dict(result)}
        stored = {"not_graded": entry} if is_not_graded(result) else entry
        with write_atomically(path) as f:
            f.write(json.dumps(stored, indent=1))


# ---------------------------------------------------------------------------------------
# Shards: fixed slices of the class, for array jobs on a cluster
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shard:
    """The index-th (from 0) of count slices of the class, by student id."""

    index: int
    count: int

    def select(self, submissions: list) -> list:
        """This shard's contiguous slice of submissions (sorted by student id): sizes differ
        by at most one, and the same class always gives the same slices."""
        begin = self.index * len(submissions) // self.count
        end = (self.index + 1) * len(submissions) // self.count
        return submissions[begin:end]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _shard_number(text: str, what: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"{what} must be a whole number, not {text!r}")
    return int(text)


def shard_index_from(environ) -> int:
    """The index an array job gives its task: SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX
    (ValueError when neither is set, or both are and disagree)."""
    found = {name: environ[name] for name in SHARD_INDEX_VARIABLES if environ.get(name, "") != ""}
    if not found:
        raise ValueError(f"--shard /N takes the shard's index from {' or '.join(SHARD_INDEX_VARIABLES)}, "
                         "and neither is set (give --shard I/N)")
    values = {_shard_number(value, f"${name}") for name, value in found.items()}
    if len(values) > 1:
        raise ValueError(f"{' and '.join(f'{k}={v}' for k, v in found.items())} disagree: "
                         "give the index explicitly (--shard I/N)")
    return values.pop()


def parse_shard(spec: str, environ=os.environ) -> Shard:
    """'I/N' (I from 0 to N-1) or '/N', whose I comes from the array job's environment
    (shard_index_from); never from the environment otherwise. ValueError saying what is wrong."""
    index_text, slash, count_text = spec.partition("/")
    if not slash:
        raise ValueError(f"--shard {spec!r}: write I/N (the I-th of N slices, I from 0) or /N")
    count = _shard_number(count_text, "N (the number of shards)")
    if count < 1:
        raise ValueError(f"--shard {spec!r}: N must be at least 1")
    index = shard_index_from(environ) if index_text == "" else _shard_number(index_text, "I (the shard)")
    if index >= count:
        raise ValueError(f"shard index {index} is out of range for {count} shards (0 to {count - 1}; "
                         f"Slurm arrays must be numbered from 0: --array=0-{count - 1})")
    return Shard(index, count)


# ---------------------------------------------------------------------------------------
# Worker processes of the batch (each imports torch and loads the data once)
# ---------------------------------------------------------------------------------------

_state = {}


# The grader's own arithmetic (hidden inputs, the reference's outputs) is on small tensors,
# beside its sandbox's worker and the other JOBS: more threads only oversubscribe the cores,
# and OpenMP's spinning threads then slow everything down (JOBS=2 was slower than JOBS=1; a
# cold grade drew the captioner's cases in 1.1 s with two threads, 0.15 s with one).
GRADER_THREADS = 1


def _init_process(data: str, device: str, allow_unsandboxed: bool) -> None:
    import torch

    sandbox.start_zygote()  # this process's warm worker: it warms up while the data loads
    torch.set_num_threads(GRADER_THREADS)
    coco = torch.load(data, weights_only=True)
    _state.update(coco=coco, fixture=checks.CaptionerFixture(coco), device=device,
                  allow_unsandboxed=allow_unsandboxed)


def _grade_one(student: str, notebook: Path) -> tuple[str, dict]:
    """(student, the result as a dict); a failure of the grader on this submission is
    NOT GRADED, with the traceback in its diagnostics."""
    try:
        result = grade.grade(notebook, coco=_state["coco"], fixture=_state["fixture"],
                             device=_state["device"], allow_unsandboxed=_state["allow_unsandboxed"])
    except grade.GraderError:
        raise  # the grader cannot work at all: stop the batch
    except Exception as exc:  # this submission broke the grader: record it, go on
        result = not_graded(f"the grader failed on this submission ({type(exc).__name__}: "
                            f"{str(exc)[:200]})", {"traceback": traceback.format_exc()[-4000:]},
                            _state["device"])
    return student, result_to_dict(result)


def grade_class(course_dir: Path, *, jobs: int = 1, data: Path, device: str = "cpu",
                allow_unsandboxed: bool = False, progress: bool = True, force: bool = False,
                students=(), shard: Shard | None = None) -> dict[str, grade.GradeResult]:
    """Grade every submission not already graded; returns {student: result} for every
    student folder (results of status NOT_GRADED included), or only the shard's students.

    force: grade everyone again; students: grade these again (their stored result is ignored);
    jobs: submissions graded at once, each in a process of its own; 0: one at a time, here;
    shard: grade only this slice of the class and write no class files (merge_class does).
    """
    course_dir = Path(course_dir)
    check_points()
    coco = load_data(data)  # a clear error now, rather than in every worker process
    fingerprint = grader_fingerprint(grade.grader_secret(), data)
    store = ResultStore(course_dir / RESULTS_DIR)
    submissions = find_submissions(course_dir)
    check_students(course_dir, submissions, students)
    mine = shard.select(submissions) if shard else submissions
    regrade = {sub.student for sub in mine} if force else set(students)
    outcomes, todo = stored_outcomes(mine, store, fingerprint, device=device, regrade=regrade)
    jobs = _jobs_to_use(jobs, device)
    where = f"shard {shard}: {len(mine)} of {len(submissions)} students; " if shard else ""
    print(f"{where}{len(outcomes)} already graded or with nothing to grade, {len(todo)} to grade "
          f"with {jobs} job(s)", file=sys.stderr)
    checks.encoder_features(coco)  # computed once here, if not cached, rather than in each job
    _grade_todo(todo, store, outcomes, jobs=jobs, coco=coco, data=data, device=device,
                allow_unsandboxed=allow_unsandboxed, progress=progress)
    if shard is None:  # a shard writes no class files: other shards write results meanwhile
        write_class_files(course_dir, submissions, outcomes)
    return outcomes


def check_students(course_dir: Path, submissions: list, students) -> None:
    """GraderError naming every student asked for (--student) who has no folder."""
    unknown = sorted(set(students) - {s.student for s in submissions})
    if unknown:
        raise grade.GraderError(f"no folder in {Path(course_dir) / 'submitted'} for student(s) "
                                f"{', '.join(unknown)}")


def stored_outcomes(submissions: list, store: ResultStore, fingerprint: str, *, device: str,
                    regrade=frozenset(), not_graded_too: bool = False) -> tuple[dict, list]:
    """({student: outcome} for those with nothing to grade or a stored result for their
    submission's key, [(submission, key)] for the others). Students in regrade get no stored
    result; not_graded_too: a stored NOT GRADED outcome counts (the batch grades those again)."""
    outcomes, todo = {}, []
    for sub in submissions:
        if sub.notebook is None:
            outcomes[sub.student] = nothing_to_grade(sub.note, device)
            continue
        key = submission_key(sub.notebook, fingerprint)
        stored = None if sub.student in regrade else store.get(sub.student, key, not_graded_too=not_graded_too)
        if stored is not None:
            outcomes[sub.student] = with_note(stored, sub.note)
        else:
            todo.append((sub, key))
    return outcomes, todo


def _jobs_to_use(jobs: int, device: str) -> int:
    """jobs, or fewer when this machine cannot hold them (with a warning saying why)."""
    if jobs > 1:
        jobs, why = jobs_that_fit(jobs, device)
        if why:
            print(f"warning: {why}", file=sys.stderr)
    return jobs


def _grade_todo(todo: list, store: ResultStore, outcomes: dict, *, jobs: int, coco: dict, data: Path,
                device: str, allow_unsandboxed: bool, progress: bool) -> None:
    """Grade todo [(submission, key)]: here when jobs is 0, else in a pool of jobs processes."""
    if todo and jobs == 0:  # in this process (debugging, tests), with the data loaded already
        _state.update(coco=coco, fixture=checks.CaptionerFixture(coco), device=device,
                      allow_unsandboxed=allow_unsandboxed)
        _grade_here(todo, store, outcomes, progress=progress, device=device)
    elif todo:
        _grade_in_parallel(todo, store, outcomes, jobs=jobs, progress=progress, device=device,
                           initargs=(str(data), device, allow_unsandboxed))


def write_class_files(course_dir: Path, submissions: list, outcomes: dict) -> None:
    """class_results.csv, and nbgrader's copy of each submission (grader_results/nbgrader_input/)."""
    write_class_csv(Path(course_dir) / CLASS_CSV, outcomes)
    from autograder import nbgrader_autograde

    nbgrader_autograde.write_nbgrader_inputs(course_dir, submissions)


def missing_result(device: str = "cpu") -> grade.GradeResult:
    """No stored result for this submission: no score, status MISSING, and what to do."""
    reason = ("no stored result for this submission under the current grader, data and secret: "
              "its shard has not run or did not finish (run that shard again)")
    result = grade.zero_result(checks.load_points(), reason, [reason], "", device)
    result.status = MISSING
    return result


def merge_class(course_dir: Path, *, data: Path, device: str = "cpu") -> dict[str, grade.GradeResult]:
    """Every student's stored outcome, graded by any shard (NOT GRADED ones included), or
    MISSING; writes class_results.csv and nbgrader's inputs. Grades nothing."""
    course_dir = Path(course_dir)
    check_points()
    load_data(data)  # the fingerprint hashes it: a clear error when it is missing or broken
    fingerprint = grader_fingerprint(grade.grader_secret(), data)
    submissions = find_submissions(course_dir)
    outcomes, todo = stored_outcomes(submissions, ResultStore(course_dir / RESULTS_DIR), fingerprint,
                                     device=device, not_graded_too=True)
    outcomes.update({sub.student: missing_result(device) for sub, _ in todo})
    write_class_files(course_dir, submissions, outcomes)
    return outcomes


# What one job can hold at once: its sandbox's memory limit and the grader process itself
# (torch, the data, the reference's computations: about 0.7 GiB measured).
GRADER_PROCESS_BYTES = 1 << 30
JOB_MEMORY_BYTES = sandbox.Limits().memory_bytes + GRADER_PROCESS_BYTES


def physical_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def jobs_that_fit(jobs: int, device: str, memory: int | None = None) -> tuple[int, str]:
    """(the jobs this machine can hold, why fewer than asked, or ""): each job may use
    its sandbox's memory limit and a grader process; under cuda, the GPU's memory fractions
    of all jobs together must stay below the whole GPU."""
    memory = physical_memory() if memory is None else memory
    each = JOB_MEMORY_BYTES
    fit = max(1, memory // each)
    reasons = []
    if jobs > fit:
        reasons.append(f"{jobs} jobs may use up to {jobs * each / 2**30:.0f} GiB ({each / 2**30:.0f} GiB "
                       f"each: the sandbox's limit and the grader) and this machine has "
                       f"{memory / 2**30:.0f} GiB")
    if device == "cuda":
        gpu_fit = max(1, int(1 / submission_sandbox.CUDA_MEMORY_FRACTION) - 1)
        if min(jobs, fit) > gpu_fit:
            reasons.append(f"each job's units may hold {submission_sandbox.CUDA_MEMORY_FRACTION:.0%} of the "
                           f"GPU's memory, so at most {gpu_fit} jobs fit on it")
            fit = min(fit, gpu_fit)
    if jobs <= fit:
        return jobs, ""
    return fit, "; ".join(reasons) + f": grading with --jobs {fit}"


def _record(student: str, result: dict, subs: dict, store: ResultStore, outcomes: dict) -> None:
    sub, key = subs[student]
    graded = result_from_dict(result)
    store.put(student, key, graded)
    outcomes[student] = with_note(graded, sub.note)


def _grade_here(todo, store: ResultStore, outcomes: dict, *, progress: bool, device: str) -> None:
    """--jobs 0: grade todo [(submission, key)] one after the other in this process (a
    debugger or a test can step into the grader; Ctrl-C waits for the submission being
    graded). Otherwise a pool of processes grades, which Ctrl-C stops at once."""
    from tqdm import tqdm

    subs = {sub.student: (sub, key) for sub, key in todo}
    for sub, _ in tqdm(todo, disable=not progress, desc="grading", unit="submission"):
        _record(*_grade_one(sub.student, sub.notebook), subs, store, outcomes)


def _grade_in_parallel(todo, store: ResultStore, outcomes: dict, *, jobs: int, progress: bool,
                       device: str, initargs: tuple) -> None:
    """Grade todo [(submission, key)] in jobs processes; store each result as it comes."""
    from tqdm import tqdm

    context = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited threads
    pool = ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=context,
                               initializer=_init_process, initargs=initargs)
    subs = {sub.student: (sub, key) for sub, key in todo}
    futures = {pool.submit(_grade_one, sub.student, sub.notebook): sub.student for sub, _ in todo}
    try:
        for future in tqdm(as_completed(futures), total=len(futures), disable=not progress,
                           desc="grading", unit="submission"):
            student = futures[future]
            try:
                _, result = future.result()
            except grade.GraderError:
                raise
            except Exception as exc:  # the batch's process died (killed, out of memory)
                result = result_to_dict(not_graded(
                    f"the grading process failed ({type(exc).__name__}: {str(exc)[:200]})",
                    {"traceback": traceback.format_exc()[-4000:]}, device))
            _record(student, result, subs, store, outcomes)
    except BaseException:
        # Ctrl-C or a fatal grader error: drop what has not started and do not wait for the
        # rest; every stored result is already complete.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def write_class_csv(path: Path, outcomes: dict[str, grade.GradeResult]) -> None:
    """A row per student: status ("graded", "not graded" or "missing"), total (empty unless graded),
    every test's points, the sandbox mode, and the notes (what was graded, or why not)."""
    points = checks.load_points()
    columns = [f"{unit}.{test}" for unit, tests in points.items() for test in tests]
    rows = []
    for student in sorted(outcomes):
        outcome = outcomes[student]
        if outcome.status != "graded":  # NOT GRADED or MISSING: no score
            rows.append([student, outcome.status, "", outcome.max_score, *[""] * len(columns),
                         outcome.mode, not_graded_reason(outcome)])
        else:
            by_test = {f"{t.unit}.{t.test}": t.score for t in outcome.tests}
            rows.append([student, "graded", outcome.score, outcome.max_score,
                         *[by_test.get(c, "") for c in columns], outcome.mode, "; ".join(outcome.notes)])
    write_csv(path, ["student", "status", "score", "max_score", *columns, "sandbox", "notes"], rows)
