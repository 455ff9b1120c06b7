"""Grading one submission: read its cells, run them in a sandboxed worker, score the outputs.

The data flow, and who can touch what:

    submission.ipynb --(solution cells only)--> one job per worker group, each an .npz sent
        down its own pipe: job.json (provided code, the reference of OTHER units, the
        student's cells, the tests) and the hidden inputs
    worker (sandbox: worker.py, runners.py, forbidden.py, read-only) --> out/<group>/:
        <unit>.npz outputs, <unit>.json errors   (untrusted data)
    grader (this process) --> reference outputs (computed here), comparison, results.json

The sandbox starts first, so that its torch import overlaps with the grader building the
hidden tests. Units run in three groups, each a separate non-dumpable process that cannot
read the others' memory, so that no student code ever runs beside the reference code of its
own unit: the units that need no other unit's code; AttentionLSTM (needs the reference LSTM
gates and attention); CaptioningRNN (needs every other unit).
"""

import ast
import hashlib
import io
import json
import os
import re
import secrets
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from autograder import checks, forbidden, sandbox
from autograder.workers import (REFERENCE_DEPENDENCIES, STUDENT_DEPENDENCIES, STUDENT_HELPERS,
                                UNIT_TIMEOUT_SECONDS, UNITS, WORKER_GROUPS, Workers)
from autograder.submission import SubmissionError, read_solution_cells
from solution import source as reference_source

AUTOGRADER_DIR = Path(__file__).resolve().parent
SECRET_FILE = AUTOGRADER_DIR / ".grader_secret"
MAX_OUTPUT_BYTES = 256 << 20  # uncompressed size of a worker's outputs.npz


@dataclass
class TestResult:
    unit: str
    test: str
    score: int
    max_score: int
    reason: str = ""  # why points were lost; empty when none were


@dataclass
class GradeResult:
    tests: list[TestResult]
    notes: list[str] = field(default_factory=list)
    mode: str = ""  # sandbox mode: "bwrap" or "unsandboxed"
    device: str = "cpu"
    # "graded", or NOT_GRADED when a failure the student did not cause persisted (the
    # sandbox died with no unit to blame, twice): such a result is never a score.
    status: str = "graded"
    diagnostics: dict = field(default_factory=dict)  # instructor-only (extra_data, --debug)

    @property
    def score(self) -> int:
        return sum(t.score for t in self.tests)

    @property
    def max_score(self) -> int:
        return sum(t.max_score for t in self.tests)


NOT_GRADED = "not graded"


class GraderError(RuntimeError):
    """The grader itself cannot grade (its set-up is broken); no result can be recorded."""


# ---------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------


def grader_secret() -> bytes:
    """The instructor's secret: $CAPTIONING_GRADER_SECRET, else a file made on first use.

    Never visible in the sandbox. With the submission's code it seeds the hidden inputs:
    the same submission always gets the same inputs, and nobody without the secret can
    predict them.
    """
    if os.environ.get("CAPTIONING_GRADER_SECRET"):
        return os.environ["CAPTIONING_GRADER_SECRET"].encode()
    if not SECRET_FILE.exists():
        fd = os.open(SECRET_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return SECRET_FILE.read_bytes().strip()


def submission_seed(secret: bytes, cells: dict[str, str]) -> int:
    digest = hashlib.sha256(secret + json.dumps(cells, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "big")


# ---------------------------------------------------------------------------------------
# Staging a worker's job
# ---------------------------------------------------------------------------------------


def _preamble() -> str:
    """The reference module's imports and provided definitions (no graded code)."""
    imports, definitions = reference_source.split_definitions()
    return imports + "\n\n" + "\n\n\n".join(definitions[n] for n in reference_source.provided_names())


def names_used(code: str) -> set[str]:
    """Every name the code reads (it parses: cells that do not were excluded before)."""
    return {node.id for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name)}


def student_code_for(unit: str, cells: dict[str, str], runnable: set[str]) -> list[str]:
    """The units whose student code runs with unit, in notebook order, unit last.

    A helper unit joins only when the unit's code calls it, so that a broken helper cell
    costs nothing to a unit that does not use it.
    """
    wanted = {unit, *STUDENT_DEPENDENCIES.get(unit, ())}
    while True:  # a helper's own calls count too (rnn_forward's call of rnn_step_forward)
        used = set().union(*(names_used(cells[u]) for u in wanted))
        more = {h for h in STUDENT_HELPERS.get(unit, ()) if h in runnable and h in used} - wanted
        if not more:
            return [u for u in UNITS if u in wanted and u != unit] + [unit]
        wanted |= more


def job_blob(units: tuple[str, ...], cells: dict[str, str], tests,
             fixture: checks.CaptionerFixture, device: str, runnable: set[str]) -> bytes:
    """Everything one worker group needs, as one .npz: job.json (code and tests) and the
    hidden inputs (runnable: the units whose cells may run)."""
    job_units, arrays, preamble = [], {}, _preamble()
    for unit in units:
        code = [{"name": "provided code", "source": preamble}]
        for dependency in REFERENCE_DEPENDENCIES.get(unit, ()):
            code.append({"name": f"provided {dependency}",
                         "source": reference_source.unit_source(dependency)})
        for dependency in student_code_for(unit, cells, runnable):
            code.append({"name": dependency, "source": cells[dependency]})
        unit_tests = []
        for test in (t for t in tests if t.unit == unit):
            entry = {"test": test.name, "cases": len(test.cases)}
            if test.options is not None:
                entry["options"] = test.options
            unit_tests.append(entry)
            for index, case in enumerate(test.cases):
                for name, value in case.inputs.items():
                    arrays[f"{unit}/{test.name}/{index}/{name}"] = value.numpy()
        if unit == "CaptioningRNN":
            for name, value in fixture.encoder_state_inputs().items():
                arrays[f"{unit}/shared/{name}"] = value.numpy()
        job_units.append({"unit": unit, "code": code, "tests": unit_tests})
    job = {"device": device, "unit_timeout": UNIT_TIMEOUT_SECONDS, "units": job_units}
    arrays["job.json"] = np.frombuffer(json.dumps(job).encode(), dtype=np.uint8)
    blob = io.BytesIO()
    np.savez(blob, **arrays)
    return blob.getvalue()


# ---------------------------------------------------------------------------------------
# Reading a worker's results (untrusted)
# ---------------------------------------------------------------------------------------


def read_regular_file(path: Path, limit: int) -> bytes | None:
    """The bytes of path when it is a regular file of at most limit bytes, else None.

    The worker can put anything in its output directory: a symbolic link (to /dev/zero, or
    to a file of this machine outside the sandbox), a FIFO (reading it would block forever).
    Those are never followed or read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with open(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        data = f.read(limit + 1)
    return data if len(data) <= limit else None


def read_outputs(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an outputs .npz, refusing pickles and oversized or malformed files."""
    data = read_regular_file(path, MAX_OUTPUT_BYTES)
    if data is None:
        return {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if sum(info.file_size for info in archive.infolist()) > MAX_OUTPUT_BYTES:
                return {}
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except Exception:  # a corrupt or hand-made file: no outputs
        return {}


def read_json(path: Path, limit: int = 1 << 20) -> dict:
    data = read_regular_file(path, limit)
    try:
        value = json.loads(data) if data is not None else {}
    except (ValueError, RecursionError):  # RecursionError: a hand-made, deeply nested file
        return {}
    return value if isinstance(value, dict) else {}


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")


def clean_reason(text) -> str:
    """A worker's error message made safe to show: short, one line, no memory addresses
    (which would change from run to run)."""
    text = _ADDRESS.sub("0x...", str(text)).replace("\n", " ")
    return text[:240]


def _worker_problem(unit: str, out_dir: Path, run: sandbox.SandboxResult | None) -> str:
    """Why a unit has no outputs: its own end (timeout, crash), or the whole worker's."""
    ended = read_json(out_dir / f"{unit}.exit.json")
    if ended.get("ended") == "timeout":
        return f"stopped after the time limit of {UNIT_TIMEOUT_SECONDS} s (an endless loop?)"
    if ended.get("ended") == "killed":
        return f"your code was killed (signal {clean_reason(ended.get('signal'))}; out of memory?)"
    if ended.get("ended") == "not started":
        return "could not start: the sandbox's process limit stayed full (a fork bomb in another unit?)"
    if ended.get("ended") == "exited":
        return f"your code ended the process (exit status {clean_reason(ended.get('code'))}) before any result"
    if run is not None and run.killed_reason:
        return f"the grading process was stopped: {run.killed_reason}"
    return "no result: the grading process ended early"


def score_unit(unit: str, tests, out_dir: Path, run) -> list[TestResult]:
    outputs = read_outputs(out_dir / f"{unit}.npz")
    errors = read_json(out_dir / f"{unit}.json").get("errors")
    errors = errors if isinstance(errors, list) else []
    results = []
    for test in (t for t in tests if t.unit == unit):
        reason = None
        for index, case in enumerate(test.cases):
            where = checks.format_label(case, index, len(test.cases))
            error = next((e.get("error") for e in errors if isinstance(e, dict)
                          and e.get("test") in (test.name, "*") and e.get("case") in (index, "*")), None)
            prefix = f"{test.name}/{index}/"
            case_outputs = {k[len(prefix):]: v for k, v in outputs.items() if k.startswith(prefix)}
            if error is not None:
                reason = f"{where}: {clean_reason(error)}"
            elif not case_outputs and not outputs:
                reason = _worker_problem(unit, out_dir, run)
            else:
                problem = checks.judge_case(case, case_outputs)
                reason = f"{where}: {problem}" if problem else None
            if reason:
                break
        results.append(TestResult(unit, test.name, 0 if reason else test.points, test.points, reason or ""))
    return results


# ---------------------------------------------------------------------------------------
# Grading
# ---------------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise GraderError("--device cuda was asked for, but no CUDA GPU is available")
    return device


def zero_result(points, reason: str, notes=None, mode="", device="cpu") -> GradeResult:
    tests = [TestResult(u, t, 0, p, reason) for u, ts in points.items() for t, p in ts.items()]
    return GradeResult(tests, notes or [], mode, device)


def grade(notebook: Path, *, coco: dict, device: str = "cpu", allow_unsandboxed: bool = False,
          fixture: checks.CaptionerFixture | None = None, secret: bytes | None = None,
          workers: Workers | None = None) -> GradeResult:
    """Grade one submitted notebook. Raises GraderError only when the grader cannot work.

    workers: a sandbox started beforehand (so that its start-up overlaps with the caller's
    own); grade() uses it or starts one, and closes it either way.
    """
    try:
        return _grade(notebook, coco, device, allow_unsandboxed, fixture, secret, workers)
    finally:
        if workers is not None:
            workers.close()


def _grade(notebook, coco, device, allow_unsandboxed, fixture, secret, workers) -> GradeResult:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = resolve_device(device)
    available, why = sandbox.sandbox_status()
    if not available and not allow_unsandboxed:
        raise GraderError(f"cannot sandbox student code: {why}. Install bubblewrap (make setup "
                          "does where it can), or pass --allow-unsandboxed to grade without "
                          "isolation (results then say so).")
    mode = "bwrap" if available else "unsandboxed"
    points = checks.load_points()
    try:
        cells, notes = read_solution_cells(notebook, UNITS)
    except SubmissionError as exc:
        return zero_result(points, str(exc), [str(exc)], mode, device)

    excluded = {}  # unit -> why it is not run at all
    for unit in UNITS:
        if unit not in cells:
            excluded[unit] = "no solution cell for this unit in the notebook"
            continue
        try:
            ast.parse(cells[unit])
            findings = forbidden.find_forbidden(cells[unit], filename=unit)
        except SyntaxError as exc:
            excluded[unit] = f"your cell has a syntax error (line {exc.lineno}: {exc.msg})"
            continue
        except (ValueError, RecursionError, MemoryError) as exc:
            # A lone surrogate (not encodable), or nesting deeper than Python's parser allows.
            excluded[unit] = f"your cell cannot be parsed ({type(exc).__name__}: {clean_reason(exc)[:120]})"
            continue
        if findings:
            excluded[unit] = "uses a built-in the assignment forbids: " + "; ".join(findings)[:200]
    for unit, needs in STUDENT_DEPENDENCIES.items():
        for need in needs:
            if need in excluded and unit not in excluded:
                excluded[unit] = f"needs your {need} (for its cache), which cannot run: {excluded[need]}"

    runnable = {u for u in UNITS if u not in excluded}
    own_workers = None
    if workers is None and runnable:
        workers = own_workers = Workers(allow_unsandboxed)
    try:
        run = None
        try:
            fixture = fixture or checks.CaptionerFixture(coco)
            tests = checks.build_tests(submission_seed(secret or grader_secret(), cells), coco, fixture)
            for group, units in WORKER_GROUPS:
                to_run = tuple(u for u in units if u in runnable)
                if to_run:  # a group sent nothing ends at once
                    workers.send(group, job_blob(to_run, cells, tests, fixture, device, runnable))
        finally:
            if workers is not None:
                run = workers.wait()
        results = []
        for group, units in WORKER_GROUPS:
            for unit in units:
                if unit in excluded:
                    results += [TestResult(unit, t.name, 0, t.points, excluded[unit]) for t in tests if t.unit == unit]
                else:
                    results += score_unit(unit, tests, workers.out_dir(group), run)
    finally:
        if own_workers is not None:
            own_workers.close()
    order = {(u, t): i for i, (u, t) in enumerate((u, t) for u, ts in points.items() for t in ts)}
    results.sort(key=lambda r: order[(r.unit, r.test)])
    return GradeResult(results, notes, mode, device)


# ---------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------


def results_json(result: GradeResult) -> dict:
    """Gradescope's results.json schema."""
    header = f"Score {result.score}/{result.max_score}. Graded in {'a sandbox (bubblewrap)' if result.mode == 'bwrap' else 'UNSANDBOXED mode'} on {result.device}."
    return {
        "score": result.score,
        "max_score": result.max_score,
        "output": "\n".join([header, *result.notes]),
        "visibility": "visible",
        "tests": [
            {"name": f"{t.unit}: {t.test}", "score": t.score, "max_score": t.max_score,
             "output": t.reason or "passed", "visibility": "visible"}
            for t in result.tests
        ],
        "extra_data": {"sandbox": result.mode, "device": result.device},
    }


def write_results(result: GradeResult, path: Path) -> None:
    """Atomic write: a reader never sees half a results file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(results_json(result), indent=2) + "\n")
    os.replace(tmp, path)


def table(result: GradeResult) -> str:
    lines = [f"{'unit':<24} {'test':<14} {'points':>7}  reason"]
    for t in result.tests:
        lines.append(f"{t.unit:<24} {t.test:<14} {t.score:>3}/{t.max_score:<3}  {t.reason}")
    lines.append(f"{'total':<24} {'':<14} {result.score:>3}/{result.max_score:<3}  "
                 f"(sandbox: {result.mode}, device: {result.device})")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)
