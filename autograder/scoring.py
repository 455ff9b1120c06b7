"""Scoring a unit: what its sandbox reported (untrusted) against the expected outputs.

The worker's frames are read with every bound of their own (frames, bytes, arrays, no
pickles); a unit with no outputs gets the reason its run ended; each test's cases are
judged in order (checks.judge_case) and the first failing one is the reason. What a
submission's own messages put into the results is cleaned and bounded (StudentText).
"""

import io
import zipfile
from dataclasses import dataclass, field

import numpy as np

from autograder import checks, submission_sandbox, wire
from autograder.reports import TestResult, clean_text

MAX_OUTPUT_BYTES = 256 << 20  # unpacked size of all of one unit's outputs
MAX_FRAMES = 16  # a unit reports once per test (at most 6) and once more when its cell fails


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
    for header, payload in wire.split_frames(sent, submission_sandbox.MAX_UNIT_REPORT_BYTES)[:MAX_FRAMES]:
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


# What a submission's own messages (its exceptions) may put into its results, in all: a
# few lines of feedback per test, not a channel wide enough to carry a file out.
STUDENT_TEXT_PER_TEST = 160
STUDENT_TEXT_PER_SUBMISSION = 4000


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
        return f"stopped after the time limit of {submission_sandbox.UNIT_SECONDS} s (an endless loop?)"
    if how == "cpu" or (how == "killed" and ended.get("signal") == 24):  # SIGXCPU
        return f"stopped after {submission_sandbox.UNIT_CPU_SECONDS} s of CPU time (the limit)"
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
        why = "uses what the assignment forbids: " + budget("; ".join(report.violations))
        return [TestResult(unit, t.name, 0, t.points, why) for t in tests if t.unit == unit]
    results = []
    for test in (t for t in tests if t.unit == unit):
        reason = None
        for index, case in enumerate(test.cases):
            where = checks.format_label(case, index, len(test.cases))
            error = next((e.get("error") for e in report.errors
                          if e.get("test") in (test.name, "*") and e.get("case") in (index, "*")), None)
            prefix = wire.case_key(test.name, index, "")
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
