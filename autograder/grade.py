"""Grading one submission: read its cells, run them in sandboxed workers, score the outputs.

The data flow, and who can touch what:

    submission.ipynb --(solution cells only)--> one job per worker group (workers.py), an
        .npz sent down the group's pipe: job.json (provided code, served stand-ins, the
        student's cells, the tests, the limits) and the hidden inputs
    the submission's sandbox (worker.py), groups in order --> frames on the report pipe:
        each unit's outputs and errors (untrusted data); served calls --> reference_service.py
    grader (this process) --> reference outputs (computed here), comparison, results

No sandbox holds reference code, expected values or the secret; a group's job reaches its
processes only once the earlier groups are done (workers.py says why that suffices). A
sandbox that dies with no unit to blame is started again for the units it did not finish;
a unit during which a sandbox died twice loses its points; a failure that persists outside
any unit makes the submission NOT GRADED, never a score.
"""

import ast
import hashlib
import io
import itertools
import json
import os
import re
import secrets
import unicodedata
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from autograder import checks, forbidden, graded_tests, sandbox, wire
from autograder import workers as worker_groups
from autograder.reference_service import ReferenceService, callable_names, served_definitions
from autograder.submission import SubmissionError, read_solution_cells
from autograder.workers import (SERVED_DEPENDENCIES, STUDENT_DEPENDENCIES, STUDENT_HELPERS, UNITS,
                                WORKER_GROUPS, Workers)
from solution import source as reference_source

AUTOGRADER_DIR = Path(__file__).resolve().parent
SECRET_FILE = AUTOGRADER_DIR / ".grader_secret"
MAX_OUTPUT_BYTES = 256 << 20  # unpacked size of all of one unit's outputs
MAX_FRAMES = 16  # a unit reports once per test (at most 6) and once more when its cell fails


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


def job_blob(units, cells: dict[str, str], tests, device: str, runnable: set[str]) -> bytes:
    """Everything one worker group needs, as one .npz: job.json (code, tests, limits) and
    the hidden inputs (runnable: the units whose cells may run)."""
    job_units, arrays, preamble = [], {}, _preamble()
    for unit in units:
        code = [{"name": "provided code", "source": preamble}]
        if unit in SERVED_DEPENDENCIES:
            code.append({"name": "served", "served": served_definitions(SERVED_DEPENDENCIES[unit])})
        for dependency in student_code_for(unit, cells, runnable):
            code.append({"name": dependency, "source": cells[dependency]})
        unit_tests = []
        for test in (t for t in tests if t.unit == unit):
            entry = {"test": test.name, "cases": len(test.cases), "shared": test.shared}
            unit_tests.append(entry)
            for index, case in enumerate(test.cases):
                for name, value in case.inputs.items():
                    arrays[f"{unit}/{test.name}/{index}/{name}"] = value.numpy()
        job_units.append({"unit": unit, "code": code, "tests": unit_tests,
                          "no_autograd": unit in forbidden.HAND_WRITTEN_BACKWARD})
    job = {"device": device, "unit_seconds": worker_groups.UNIT_SECONDS,
           "unit_cpu_seconds": worker_groups.UNIT_CPU_SECONDS,
           "unit_wall_seconds": worker_groups.UNIT_WALL_SECONDS,
           "cuda_memory_fraction": worker_groups.CUDA_MEMORY_FRACTION, "units": job_units}
    arrays["job.json"] = np.frombuffer(json.dumps(job).encode(), dtype=np.uint8)
    blob = io.BytesIO()
    np.savez(blob, **arrays)
    return blob.getvalue()


def service_for(units) -> ReferenceService | None:
    """The reference service a group's sandbox calls, if its units need one."""
    names = set()
    for unit in units:
        if unit in SERVED_DEPENDENCIES:
            names |= callable_names(served_definitions(SERVED_DEPENDENCIES[unit]))
    return ReferenceService(names) if names else None


# ---------------------------------------------------------------------------------------
# Reading a worker's results (untrusted)
# ---------------------------------------------------------------------------------------


@dataclass
class UnitReport:
    """What a unit's sandbox reported: outputs, errors, forbidden uses, how it ended."""

    ended: dict
    outputs: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)
    violations: list = field(default_factory=list)
    lost: str = ""  # set when the unit has no report at all: why


def parse_report(ended: dict, sent: bytes) -> UnitReport:
    """The frames a unit sent, one per test (untrusted: malformed parts are dropped)."""
    report, unpacked = UnitReport(ended), 0
    for header, payload in wire.split_frames(sent, worker_groups.MAX_UNIT_REPORT_BYTES)[:MAX_FRAMES]:
        errors, violations = header.get("errors"), header.get("violations")
        report.errors += [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
        if isinstance(violations, list):
            report.violations = [str(v) for v in violations][:20]
        outputs = read_outputs(payload, MAX_OUTPUT_BYTES - unpacked)
        unpacked += sum(a.nbytes for a in outputs.values())
        report.outputs.update(outputs)
    return report


def read_outputs(data: bytes, limit: int = MAX_OUTPUT_BYTES) -> dict[str, np.ndarray]:
    """The arrays of an outputs .npz, refusing pickles, files that unpack to more than limit
    bytes, and malformed ones."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if sum(info.file_size for info in archive.infolist()) > limit:
                return {}
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except Exception:  # a corrupt or hand-made file: no outputs
        return {}


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
MAX_REASON_CHARS = 240
# What a submission's own messages (its exceptions) may put into its results, in all: a
# few lines of feedback per test, not a channel wide enough to carry a file out.
STUDENT_TEXT_PER_TEST = 160
STUDENT_TEXT_PER_SUBMISSION = 4000


def clean_text(text, limit: int = MAX_REASON_CHARS) -> str:
    """Text made safe to show: one line, no control or format characters (escape
    sequences, carriage returns, bidirectional overrides), no memory addresses (which would
    change from run to run), at most limit characters."""
    text = _ADDRESS.sub("0x...", str(text))
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return text[:limit]



class StudentText:
    """The budget of student-controlled text in one submission's results."""

    def __init__(self):
        self.left = STUDENT_TEXT_PER_SUBMISSION

    def __call__(self, text) -> str:
        text = clean_text(text, min(STUDENT_TEXT_PER_TEST, self.left))
        self.left -= len(text)
        return text or "(message not shown: this submission's messages are over their length limit)"


def _lost_reason(unit: str, report: UnitReport, budget: StudentText) -> str:
    """Why a unit has no outputs: its own end (time limits, a crash), or the sandbox's."""
    ended = report.ended
    how = ended.get("ended")
    if report.lost:
        return report.lost
    if how == "timeout":
        return f"stopped after the time limit of {worker_groups.UNIT_SECONDS} s (an endless loop?)"
    if how == "cpu" or (how == "killed" and ended.get("signal") == 24):  # SIGXCPU
        return f"stopped after {worker_groups.UNIT_CPU_SECONDS} s of CPU time (the limit)"
    if how == "killed":
        return f"your code was killed (signal {budget(ended.get('signal'))}; out of memory?)"
    if how == "not started":
        return "could not start: the sandbox's process limit stayed full"
    if "oversized" in ended:
        return "your code's outputs were too large to take"
    if how == "exited":
        return f"your code ended the process (exit status {budget(ended.get('code'))}) before any result"
    return "no result: the grading process ended early"


def score_unit(unit: str, tests, report: UnitReport, budget: StudentText) -> list[TestResult]:
    if report.violations:
        why = "uses a built-in the assignment forbids: " + budget("; ".join(report.violations))
        return [TestResult(unit, t.name, 0, t.points, why) for t in tests if t.unit == unit]
    results = []
    for test in (t for t in tests if t.unit == unit):
        reason = None
        for index, case in enumerate(test.cases):
            where = checks.format_label(case, index, len(test.cases))
            error = next((e.get("error") for e in report.errors
                          if e.get("test") in (test.name, "*") and e.get("case") in (index, "*")), None)
            prefix = f"{test.name}/{index}/"
            case_outputs = {k[len(prefix):]: v for k, v in report.outputs.items() if k.startswith(prefix)}
            if error is not None:
                reason = f"{where}: {budget(error)}"
            elif not case_outputs:
                reason = f"{where}: {_lost_reason(unit, report, budget)}"
            else:
                problem = checks.judge_case(case, case_outputs, test.tolerance)
                reason = f"{where}: {problem}" if problem else None
            if reason:
                break
        results.append(TestResult(unit, test.name, 0 if reason else test.points, test.points,
                                  clean_text(reason or "")))
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

    workers: sandboxes started beforehand (so that their start-up overlaps with the
    caller's own); grade() uses them or starts its own, and closes them either way.
    """
    try:
        return _grade(notebook, coco, device, allow_unsandboxed, fixture, secret, workers)
    finally:
        if workers is not None:
            workers.close()


def _grade(notebook, coco, device, allow_unsandboxed, fixture, secret, started) -> GradeResult:
    graded_tests.strict_float_math()
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
        return zero_result(points, clean_text(exc), [clean_text(exc)], mode, device)
    excluded = screen(cells)
    runnable = {u for u in UNITS if u not in excluded}
    fixture = fixture or checks.CaptionerFixture(coco)
    tests = checks.build_tests(submission_seed(secret or grader_secret(), cells), coco, fixture)
    reports, not_graded, diagnostics = run_units(runnable, cells, tests, device, allow_unsandboxed, started)
    started = None  # run_units closed it
    budget, results = StudentText(), []
    for unit in UNITS:
        if unit in excluded:
            why = clean_text(excluded[unit])
            results += [TestResult(unit, t.name, 0, t.points, why) for t in tests if t.unit == unit]
        elif unit in reports:
            results += score_unit(unit, tests, reports[unit], budget)
    order = {(u, t): i for i, (u, t) in enumerate((u, t) for u, ts in points.items() for t in ts)}
    results.sort(key=lambda r: order[(r.unit, r.test)])
    if not_graded:
        return GradeResult([TestResult(r.unit, r.test, 0, r.max_score, "NOT GRADED") for r in results],
                           notes + [f"NOT GRADED: {not_graded}"], mode, device, NOT_GRADED, diagnostics)
    return GradeResult(results, notes, mode, device, diagnostics=diagnostics)


def screen(cells: dict[str, str]) -> dict[str, str]:
    """{unit: why it is not run at all}: missing, unparsable or forbidden cells, and the
    units that need such a cell's code. Names resolve through the imports of every cell and
    of the provided code, as they do in the notebook."""
    excluded = {}
    for unit in UNITS:
        if unit not in cells:
            excluded[unit] = "no solution cell for this unit in the notebook"
            continue
        try:
            ast.parse(cells[unit])
        except SyntaxError as exc:
            excluded[unit] = f"your cell has a syntax error (line {exc.lineno}: {exc.msg})"
        except (ValueError, RecursionError, MemoryError) as exc:
            # A lone surrogate (not encodable), or nesting deeper than Python's parser allows.
            excluded[unit] = f"your cell cannot be parsed ({type(exc).__name__}: {clean_text(exc, 120)})"
    readable = {u: code for u, code in cells.items() if u not in excluded}
    findings = forbidden.find_forbidden_in_cells(readable, reference_source.split_definitions()[0])
    for unit, found in findings.items():
        if found:
            excluded[unit] = "uses what the assignment forbids: " + "; ".join(found)[:200]
    for unit, needs in STUDENT_DEPENDENCIES.items():
        for need in needs:
            if need in excluded and unit not in excluded:
                excluded[unit] = f"needs your {need} (for its cache), which cannot run: {excluded[need]}"
    return excluded


def run_units(runnable: set[str], cells, tests, device: str, allow_unsandboxed: bool,
              started: Workers | None) -> tuple[dict, str, dict]:
    """Run every runnable unit in the submission's sandbox, group after group: ({unit:
    UnitReport}, why the submission cannot be graded or "", instructor-only diagnostics).

    A sandbox that ends before all its units have ended is started again for the rest. The
    unit running when a sandbox died is blamed once it has happened twice (it then gets
    the reason, and the others run without it); a sandbox that fails twice with no unit to
    blame (its start, a machine too busy) makes the submission NOT GRADED.
    """
    pending = {group: [u for u in units if u in runnable] for group, units in WORKER_GROUPS}
    reports, deaths, failures, diagnostics = {}, Counter(), 0, {}
    for attempt in itertools.count(1):
        if not any(pending.values()):
            break
        box = started or Workers(allow_unsandboxed, groups=[g for g, units in pending.items() if units])
        started = None
        try:
            for group, units in pending.items():
                if units:
                    box.send(group, job_blob(units, cells, tests, device, runnable), service_for(units))
        finally:
            outcome = box.wait()
        waiting = [u for units in pending.values() for u in units]
        busy = False
        for unit in waiting:
            if unit in outcome.ended:
                ended, sent = outcome.ended[unit]
                if ended.get("ended") == "busy":  # the machine's fault: run it again
                    busy = True
                else:
                    reports[unit] = parse_report(ended, sent)
        culprit = outcome.running
        if culprit in waiting and culprit not in reports and outcome.stopped_by_unit:
            reports[culprit] = UnitReport({}, lost=(
                "your code stopped the grading process (a stop signal to a process other than "
                "its own): no result"))
        elif culprit in waiting and culprit not in reports and not outcome.watchdog:
            deaths[culprit] += 1
            if deaths[culprit] >= 2:
                reports[culprit] = UnitReport({}, lost=(
                    "the grading process ended while your code ran (twice): it may have "
                    "killed or stopped its own process, or used too much memory"))
        elif busy or any(u not in reports for u in waiting):
            failures += 1
        if busy or any(u not in reports for u in waiting):
            diagnostics[f"sandbox {attempt}"] = outcome.diagnostics()
        pending = {group: [u for u in units if u not in reports] for group, units in pending.items()}
        if failures >= 2:
            return reports, ("the sandbox failed twice with no unit to blame "
                             f"({outcome.problem or outcome.error or 'it ended early'}); "
                             "grade again, or see the diagnostics"), diagnostics
    return reports, "", diagnostics


# ---------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------


def results_json(result: GradeResult) -> dict:
    """Gradescope's results.json schema; extra_data holds what only instructors need."""
    where = "a sandbox (bubblewrap)" if result.mode == "bwrap" else "UNSANDBOXED mode"
    header = ("NOT GRADED (a failure of the grading machine, not of your code; your "
              "instructor will grade it again)." if result.status == NOT_GRADED
              else f"Score {result.score}/{result.max_score}. Graded in {where} on {result.device}.")
    return {
        "score": result.score,
        "max_score": result.max_score,
        "output": "\n".join([header, *(clean_text(n, 400) for n in result.notes)]),
        "visibility": "visible",
        "tests": [
            {"name": f"{t.unit}: {t.test}", "score": t.score, "max_score": t.max_score,
             "output": clean_text(t.reason) or "passed", "visibility": "visible"}
            for t in result.tests
        ],
        "extra_data": {"sandbox": result.mode, "device": result.device, "status": result.status,
                       "diagnostics": result.diagnostics},
    }


def write_results(result: GradeResult, path: Path) -> None:
    """Atomic write: a reader never sees half a results file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(results_json(result), indent=2) + "\n")
    os.replace(tmp, path)


def table(result: GradeResult) -> str:
    """The result for a terminal: every field stripped of control characters, so that no
    message can move the cursor or rewrite another row."""
    lines = [f"{'unit':<24} {'test':<14} {'points':>7}  reason"]
    for t in result.tests:
        lines.append(f"{t.unit:<24} {t.test:<14} {t.score:>3}/{t.max_score:<3}  {clean_text(t.reason)}")
    total = "NOT GRADED" if result.status == NOT_GRADED else f"{result.score:>3}/{result.max_score:<3}"
    lines.append(f"{'total':<24} {'':<14} {total}  (sandbox: {result.mode}, device: {result.device})")
    lines += [f"note: {clean_text(n, 400)}" for n in result.notes]
    return "\n".join(lines)
