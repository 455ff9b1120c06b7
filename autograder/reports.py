"""What a grading produces, in each format that reads it: results.json (Gradescope's
schema, also read by GitHub Classroom and nbgrader's plug-in) and the terminal's table.

Every field that a submission could influence is cleaned (scoring.clean_text) again here,
so that no message can move a terminal's cursor or rewrite another row.
"""

import json
from pathlib import Path

from autograder import write_atomically
from autograder.scoring import NOT_GRADED, GradeResult, clean_text


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
