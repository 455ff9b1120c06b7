"""A grading's result (GradeResult) and the formats that read it: results.json (Gradescope's
schema), the terminal's table, GitHub Classroom's payload and the text of nbgrader's grade
cells. (The class's CSV is batch.write_class_csv.)

Every field that a submission could influence is cleaned (clean_text) again on its way
out, so that no message can move a terminal's cursor or rewrite another row. This module
imports no torch: nbgrader's commands load it.
"""

import base64
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from autograder import write_atomically


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


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
MAX_REASON_CHARS = 240


def clean_text(text, limit: int = MAX_REASON_CHARS) -> str:
    """Text made safe to show: one line, no control or format characters (escape
    sequences, carriage returns, bidirectional overrides), no memory addresses (which would
    change from run to run), at most limit characters."""
    text = _ADDRESS.sub("0x...", str(text))
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return text[:limit]


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
    """results.json at path; a reader never sees half of one."""
    with write_atomically(path) as f:
        f.write(json.dumps(results_json(result), indent=2) + "\n")


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


def classroom_payload(results: dict) -> str:
    """GitHub Classroom's grading reporter reads a runner's result as base64-encoded JSON."""
    tests = [{"name": t["name"], "status": "pass" if t["score"] == t["max_score"] else "fail",
              "score": t["score"], "message": t["output"], "test_code": "", "filename": "",
              "line_no": 0, "execution_time": ""} for t in results["tests"]]
    payload = {"version": 1, "max_score": results["max_score"], "tests": tests,
               "status": "pass" if results["score"] == results["max_score"] else "fail"}
    return base64.b64encode(json.dumps(payload).encode()).decode()


def not_graded_text(result) -> str:
    from autograder import batch

    return (f"NOT GRADED: {batch.not_graded_reason(result).removeprefix('NOT GRADED: ')}\n"
            "No score was recorded: the grader failed for a reason that is not your code. "
            "Your instructor will grade this submission again.\n")


def unit_feedback(result, unit: str) -> tuple[str, int]:
    """(the lines shown in a unit's grade cell, the unit's score)."""
    from autograder import batch

    if batch.is_not_graded(result):
        return not_graded_text(result), 0
    tests = [t for t in result.tests if t.unit == unit]
    lines = [f"{t.test}: {t.score}/{t.max_score}" + (f" - {t.reason}" if t.reason else "") for t in tests]
    return "\n".join(lines) + "\n", sum(t.score for t in tests)
