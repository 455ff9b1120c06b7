"""Grading one submission, step by step (``grade``):

1. extract: the notebook's solution cells, one per graded unit (submission.py);
2. screen: cells that cannot run at all (missing, unparsable, forbidden built-ins) cost
   their units, with the reason, before anything runs;
3. draw: each test's hidden cases from a seed of the secret and the code, and the
   reference's outputs on them (checks.py, graded_tests.py);
4. isolate and run: the units in the submission's sandbox, group after group (jobs.py says
   what a sandbox is sent, submission_sandbox.py how it runs, worker.py what runs inside);
5. compare and score: each unit's reported outputs against the expected ones (scoring.py);
   a unit that lost points while a collaborator it relies on fails its own tests is judged
   again with the grader's collaborators in their place, and keeps the better result
   (collaborators.py);
6. report: the GradeResult, written by the caller (reports.py, batch.py, nbgrader).

Who can touch what: no sandbox holds reference code, expected values or the secret; a
group's job reaches its processes only once the earlier groups are done (submission_sandbox.py says
why that suffices). A sandbox that dies with no unit to blame is started again for the
units it did not finish; a unit during which a sandbox died twice, or that stopped its
worker, loses its points; a failure that persists outside any unit makes the submission
NOT GRADED, never a score.
"""

import ast
import contextlib
import hashlib
import itertools
import json
import os
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from autograder import checks, collaborators, forbidden, graded_tests, jobs, sandbox
from autograder.reports import NOT_GRADED, GradeResult, TestResult, clean_text
from autograder.scoring import StudentText, UnitReport, parse_report, score_unit
from autograder.submission import SubmissionError, read_solution_cells
from autograder.submission_sandbox import STUDENT_DEPENDENCIES, UNITS, WORKER_GROUPS, Group, SubmissionSandbox
from solution import source as reference_source

SECRET_FILE = Path(__file__).resolve().parent / ".grader_secret"


class GraderError(RuntimeError):
    """The grader itself cannot grade (its set-up is broken); no result can be recorded."""


def grade(notebook: Path, *, coco: dict, device: str = "cpu", allow_unsandboxed: bool = False,
          fixture: checks.CaptionerFixture | None = None, secret: bytes | None = None,
          started: SubmissionSandbox | None = None) -> GradeResult:
    """Grade one submitted notebook. Raises GraderError only when the grader cannot work.

    started: a sandbox started beforehand (so that its start-up overlaps with the caller's
    own); grade() uses it or starts its own, and closes it either way.
    """
    with started or contextlib.nullcontext():
        device, mode = grading_conditions(device, allow_unsandboxed)
        points = checks.load_points()
        try:
            cells, notes = read_solution_cells(notebook, UNITS)  # 1. extract
        except SubmissionError as exc:
            return zero_result(points, clean_text(exc), [clean_text(exc)], mode, device)
        own_exclusions = screen(cells)  # 2. screen
        excluded = {**without_cache(own_exclusions), **own_exclusions}
        # 3. draw (each group's tests as its job is sent)
        tests = checks.HiddenTests(submission_seed(secret or grader_secret(), cells), coco, fixture)
        runnable = {u for u in UNITS if u not in excluded}
        run = RunContext(cells, tests, device, allow_unsandboxed)
        # 4. isolate, run; the reference's outputs are computed while the first units run.
        reports, not_graded, diagnostics = run_units(WORKER_GROUPS, runnable, run, started,
                                                     meanwhile=lambda: checks.add_expected(tests))
        checks.add_expected(tests)  # those not computed yet (no unit could run)
    budget = StudentText()  # of the whole submission, both rounds
    results = score(tests, excluded, reports, budget)  # 5. compare, score
    if not not_graded:
        results, more_notes, not_graded = judge_again(results, set(own_exclusions), runnable, run, budget,
                                                      diagnostics)
        notes = notes if not_graded else notes + more_notes
    if not_graded:
        return GradeResult([TestResult(t.unit, t.name, 0, t.points, "NOT GRADED") for t in tests],
                           notes + [f"NOT GRADED: {not_graded}"], mode, device, NOT_GRADED, diagnostics)
    return GradeResult(results, notes, mode, device, diagnostics=diagnostics)


def grading_conditions(device: str, allow_unsandboxed: bool) -> tuple[str, str]:
    """(device, sandbox mode) of this grading; GraderError when neither can be had."""
    graded_tests.strict_float_math()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise GraderError("--device cuda was asked for, but no CUDA GPU is available")
    available, why = sandbox.sandbox_status()
    if not available and not allow_unsandboxed:
        raise GraderError(f"cannot sandbox student code: {why}. Install bubblewrap (make setup "
                          "does where it can), or pass --allow-unsandboxed to grade without "
                          "isolation (results then say so).")
    return device, "bwrap" if available else "unsandboxed"


def zero_result(points, reason: str, notes=None, mode="", device="cpu") -> GradeResult:
    """0 for every test of points ({unit: {test: points}}), each with reason."""
    tests = [TestResult(u, t, 0, p, reason) for u, ts in points.items() for t, p in ts.items()]
    return GradeResult(tests, notes or [], mode, device)


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
# Screening, running, scoring
# ---------------------------------------------------------------------------------------


def screen(cells: dict[str, str]) -> dict[str, str]:
    """{unit: why its cell cannot run at all}: missing, unparsable or forbidden cells.
    Names resolve through the imports of every cell and of the provided code, as they do in
    the notebook."""
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
    return excluded


def without_cache(excluded: dict[str, str]) -> dict[str, str]:
    """{unit: why}: the units that need the cache of an excluded unit's forward pass."""
    return {unit: f"needs your {need} (for its cache), which cannot run: {excluded[need]}"
            for unit, needs in STUDENT_DEPENDENCIES.items() for need in needs if need in excluded}


@dataclass(frozen=True)
class RunContext:
    """What every sandbox of one grading is given: the cells, the tests, the device."""

    cells: dict[str, str]
    tests: checks.HiddenTests
    device: str
    allow_unsandboxed: bool


def run_units(groups: tuple[Group, ...], runnable: set[str], run: RunContext,
              started: SubmissionSandbox | None, meanwhile=None) -> tuple[dict, str, dict]:
    """Run the runnable units of groups in the submission's sandbox, group after group:
    ({unit: UnitReport}, why the submission cannot be graded or "", instructor-only
    diagnostics).

    A sandbox that ends before all its units have ended is started again for the rest. The
    unit running when a sandbox died is blamed once it has happened twice (it then gets
    the reason, and the others run without it), at once when it stopped the worker; a
    sandbox that fails twice with no unit to blame (its start, a machine too busy) makes
    the submission NOT GRADED. meanwhile, if given, is called once the first sandbox has its
    jobs, while it runs them.
    """
    pending = {group: [u for u in group.units if u in runnable] for group in groups}
    reports, deaths, failures, diagnostics = {}, Counter(), 0, {}
    for attempt in itertools.count(1):
        waiting = [u for units in pending.values() for u in units]
        if not waiting:
            return reports, "", diagnostics
        needed = tuple(group for group, units in pending.items() if units)
        with started or SubmissionSandbox(run.allow_unsandboxed, groups=needed) as box:
            for group in needed:
                box.send(group.name, jobs.job_blob(group, pending[group], run.cells, run.tests.of(pending[group]),
                                                   run.device, runnable), jobs.service_for(group))
            if meanwhile is not None:  # the grader's own work, while the sandbox runs
                meanwhile()
                meanwhile = None
        started = None
        outcome = box.outcome
        busy = take_reports(outcome, waiting, reports)
        if not blame(outcome, waiting, reports, deaths) and (busy or any(u not in reports for u in waiting)):
            failures += 1
        if busy or any(u not in reports for u in waiting):
            diagnostics[f"sandbox {attempt}"] = outcome.diagnostics()
        pending = {group: [u for u in units if u not in reports] for group, units in pending.items()}
        if failures >= 2:
            return reports, ("the sandbox failed twice with no unit to blame "
                             f"({outcome.problem or outcome.error or 'it ended early'}); "
                             "grade again, or see the diagnostics"), diagnostics


def take_reports(outcome, waiting: list[str], reports: dict) -> bool:
    """Add the report of every waiting unit that ended to reports; whether one was "busy"
    (still within its limits when the machine was too slow to judge it: run it again)."""
    busy = False
    for unit in waiting:
        if unit in outcome.ended:
            ended, sent = outcome.ended[unit]
            if ended.get("ended") == "busy":
                busy = True
            else:
                reports[unit] = parse_report(ended, sent)
    return busy


def blame(outcome, waiting: list[str], reports: dict, deaths: Counter) -> bool:
    """Whether the sandbox ended during a unit that can be blamed for it: one that stopped
    the worker loses its points at once, one during which the sandbox died twice then."""
    culprit = outcome.running
    if culprit not in waiting or culprit in reports or outcome.watchdog:
        return False
    if outcome.stopped_by_unit:
        reports[culprit] = UnitReport({}, lost=(
            "your code stopped the grading process (a stop signal to a process other than "
            "its own): no result"))
        return True
    deaths[culprit] += 1
    if deaths[culprit] >= 2:
        reports[culprit] = UnitReport({}, lost=(
            "the grading process ended while your code ran (twice): it may have "
            "killed or stopped its own process, or used too much memory"))
    return True


def score(tests, excluded: dict[str, str], reports: dict[str, UnitReport], budget: StudentText) -> list[TestResult]:
    """Every test's result, in the order of points.toml: a screened-out unit's tests get its
    reason, the others are judged on what their unit reported."""
    by_unit = {}
    for unit in UNITS:  # the budget of student text is spent in the notebook's order
        if unit in excluded:
            why = clean_text(excluded[unit])
            by_unit[unit] = [TestResult(unit, t.name, 0, t.points, why) for t in tests if t.unit == unit]
        elif unit in reports:
            by_unit[unit] = score_unit(unit, tests, reports[unit], budget)
    results = {(r.unit, r.test): r for unit_results in by_unit.values() for r in unit_results}
    return [results[(t.unit, t.name)] for t in tests if (t.unit, t.name) in results]


def judge_again(results: list[TestResult], own_exclusions: set[str], runnable: set[str], run: RunContext,
                budget: StudentText, diagnostics: dict) -> tuple[list[TestResult], list[str], str]:
    """Step 5, continued: each unit that lost points while a collaborator it relies on fails
    its own tests is run again, with the grader's version of that collaborator served
    (collaborators.py): (every test's result, notes, why the submission cannot be graded)."""
    retries = collaborators.plan(results, own_exclusions, run.cells, runnable)
    if not retries:
        return results, [], ""
    groups = tuple(r.group for r in retries)
    reports, not_graded, more = run_units(groups, runnable | {r.unit for r in retries}, run, None)
    diagnostics.update({f"judged again, {key}": value for key, value in more.items()})
    again = score(run.tests, {}, reports, budget)
    merged, notes = collaborators.merge(results, {u: [r for r in again if r.unit == u] for u in reports}, retries)
    return merged, notes, not_graded
