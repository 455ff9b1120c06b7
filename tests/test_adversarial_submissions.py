"""Adversarial submissions (tests/catalogue/adversarial.py) against the grader.

For every submission: the grader returns a result (no crash, no hang: a deadline), every
attacked unit gets exactly the outcome its entry names (0 with a matching reason, or its
full points), and every other unit keeps its points (or, beside an attack that kills its
whole sandbox, loses them with that reason). Malformed files score 0 with a reason.
"""

import contextlib
import signal
import time

import pytest

from autograder import forbidden, submission_sandbox
from catalogue import isolation_attacks
from catalogue.adversarial import MALFORMED, SUBMISSIONS, reason_matches, write_notebook
from grading import failures, grade_notebook

pytestmark = pytest.mark.slow  # gradings, batches or the command line: not in make test-fast


class GraderHung(BaseException):
    """Raised by deadline(): not an Exception (TimeoutError is an OSError), so that no
    ``except Exception`` or ``except OSError`` in the grader can swallow it."""


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the test run) when the block takes longer than seconds."""
    def expired(signum, frame):
        raise GraderHung(f"the grader did not return within {seconds} s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("submission", SUBMISSIONS + isolation_attacks.SUBMISSIONS, ids=lambda s: s.id)
def test_an_adversarial_submission_gains_nothing(submission, tmp_path, monkeypatch):
    # The static screen (forbidden.find_forbidden_in_cells) would exclude many attacks before
    # they run; here it sees nothing, so that the sandbox itself must hold against code the
    # screen misses. tests/test_forbidden*.py test the screen.
    monkeypatch.setattr(forbidden, "find_forbidden_in_cells", lambda cells, preamble="": {u: [] for u in cells})
    if submission.unit_timeout:
        monkeypatch.setattr(submission_sandbox, "UNIT_SECONDS", submission.unit_timeout)
    notebook = write_notebook(tmp_path / f"{submission.id}.ipynb", submission.cells(), submission.omit,
                              submission.outputs_mb)
    started = time.monotonic()
    with deadline(submission.seconds):
        result = grade_notebook(notebook)
    elapsed = time.monotonic() - started
    attacks = {a.unit: a for a in submission.attacks}
    problems = []
    for t in result.tests:
        attack = attacks.get(t.unit)
        if t.unit in submission.omit:
            if t.score != 0 or "no solution cell" not in t.reason:
                problems.append(f"{t.unit}.{t.test} (omitted): {t.score}/{t.max_score} {t.reason}")
        elif attack is None and submission.others_may_lose:
            if t.score not in (0, t.max_score) or (t.score == 0 and "ended early" not in t.reason):
                problems.append(f"{t.unit}.{t.test} (honest, beside a sandbox killer): "
                                f"{t.score}/{t.max_score} {t.reason}")
        elif attack is None or attack.outcome == "full" or (attack.tests and t.test not in attack.tests):
            if t.score != t.max_score:
                who = f"attacked: {attack.what}" if attack else "honest"
                problems.append(f"{t.unit}.{t.test} ({who}) lost points: {t.reason}")
        elif t.score != 0 or not reason_matches(attack.reason, t.reason):
            problems.append(f"{t.unit}.{t.test} (attacked: {attack.what}): {t.score}/{t.max_score}, "
                            f"reason {t.reason!r} does not match {attack.reason!r}")
    assert not problems, "\n".join(problems) + f"\n(graded in {elapsed:.0f} s)\nall lost:\n" + failures(result)
    assert result.max_score == 100 and result.mode == "bwrap" and result.status == "graded"
    reasons = [t.reason for t in result.tests]
    assert not isolation_attacks.leaks_reference(reasons), isolation_attacks.exfiltrated_text(reasons)[:500]
    dirty = [r for r in reasons + result.notes if r and not isolation_attacks.reason_is_clean(r)]
    assert not dirty, dirty


@pytest.mark.parametrize("malformed", MALFORMED, ids=lambda m: m.id)
def test_a_file_that_is_not_a_notebook_scores_0_with_a_reason(malformed, tmp_path):
    notebook = tmp_path / "submission.ipynb"
    notebook.write_bytes(malformed.data())
    with deadline(120):
        result = grade_notebook(notebook)
    assert result.score == 0 and result.max_score == 100
    assert all(reason_matches(malformed.reason, t.reason) for t in result.tests), failures(result)
