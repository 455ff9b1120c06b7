"""A bug costs points only in its own unit: units judged again with correct collaborators.

The sequence functions may call the student's step functions, and a backward pass is
given the cache of the student's own forward pass (STUDENT_COLLABORATORS), so in round
one a bug in rnn_step_forward would also cost rnn_step_backward, rnn_forward and
rnn_backward. A unit that loses points while a collaborator it relies on fails its own
tests is therefore judged again (round two), in a sandbox of its own, with the grader's
version of each such collaborator served in place of the student's; it keeps the better
of its two results.

Which collaborators are served: those that fail, but not possibly through another failing
unit that the judged unit relies on too (rnn_step_backward fails through a buggy
rnn_step_forward's cache; rnn_backward calling both is served the forward step, and the
backward with it), with the other half of each forward/backward pair that shares a cache,
so that the served pair reads its own cache. A step function whose cell cannot run counts
for the units whose code calls it. The student's rnn_forward calling a
served rnn_step_forward then builds the caches a served rnn_step_backward reads.

A backward pass that loses points while the forward pass whose cache it reads passes its
own tests is judged again too, with the grader's forward pass served: if it then does
better, the pair disagrees on the cache (rnn_step_forward caching the pre-activation where
its backward reads tanh's output), and that is the forward pass's bug: the backward keeps
its better result and the forward loses its points, with the reason. (Charging the
backward instead would make breaking the forward on purpose pay.)

Round two gives no more than correct code earns: the unit's own code still computes all
it is asked for, and served calls answer a hand-written backward pass's forward calls only
(the gradients of rnn_step_forward are rnn_step_backward's answer; rnn_forward, whose test
differentiates through it, gets them on its own hidden inputs). Where it does not help (a bug of the
unit's own, or a cache laid out otherwise than the reference's), every failing test's
reason names the collaborators it relied on.
"""

from dataclasses import dataclass

from autograder import jobs
from autograder.reports import TestResult
from autograder.submission_sandbox import STUDENT_COLLABORATORS, STUDENT_DEPENDENCIES, STUDENT_HELPERS, UNITS, Group, \
    again_group

# Forward and backward passes that share a cache, both ways.
CACHE_PARTNERS = {**{f: b for b, fs in STUDENT_DEPENDENCIES.items() for f in fs},
                  **{b: f for b, fs in STUDENT_DEPENDENCIES.items() for f in fs}}


def relied_on(unit: str, cells: dict[str, str], runnable: set[str]) -> set[str]:
    """The units whose student code ran with unit in round one, or would have run but for a
    cell that cannot run (a cache it needs, a step function its code calls). Only for a
    unit that the screen did not exclude itself: its own cell parses."""
    needs = set(STUDENT_DEPENDENCIES.get(unit, ()))
    ran = jobs.student_code_for(unit, cells, runnable | {unit}, served=tuple(needs - runnable))
    named = set().union(*(jobs.names_used(cells[u]) for u in ran))
    cannot_run = {h for h in STUDENT_HELPERS.get(unit, ()) if h in named and h not in runnable}
    return set(ran) - {unit} | needs | cannot_run


@dataclass(frozen=True)
class Retry:
    """A unit judged again: its round-two group (the unit, the grader's collaborators served
    to it) and the cause, the student's collaborators it relied on that fail on their own."""

    group: Group
    causes: tuple[str, ...]
    # The cause passes its own tests: only the cache it makes for this unit can be wrong.
    mismatch: bool = False

    @property
    def unit(self) -> str:
        return self.group.units[0]


def plan(results: list[TestResult], own_exclusions: set[str], cells: dict[str, str],
         runnable: set[str]) -> list[Retry]:
    """The units to judge again, in notebook order: rnn_backward, the only one that may be
    served rnn_step_backward (whose forward call is that unit's answer), last (see
    submission_sandbox.py)."""
    lost = {r.unit for r in results if r.score < r.max_score}
    relies = {u: relied_on(u, cells, runnable) if u not in own_exclusions else set() for u in UNITS}
    retries = []
    for unit, collaborators in STUDENT_COLLABORATORS.items():
        if unit not in lost or unit in own_exclusions:
            continue
        failing = relies[unit] & lost
        # A failing collaborator is a cause unless it may fail through another that unit
        # relies on too (rnn_step_backward given the cache of a failing rnn_step_forward).
        causes = {c for c in failing if not relies[c] & failing}
        served = causes | ({CACHE_PARTNERS[c] for c in causes if c in CACHE_PARTNERS} & set(collaborators))
        if causes:
            retries.append(Retry(again_group(unit, _in_order(served)), _in_order(causes)))
        elif _cache_maker_passes(unit, runnable, lost):
            maker = STUDENT_DEPENDENCIES[unit]
            retries.append(Retry(again_group(unit, maker), maker, mismatch=True))
    return retries


def _cache_maker_passes(unit: str, runnable: set[str], lost: set[str]) -> bool:
    makers = STUDENT_DEPENDENCIES.get(unit, ())
    return bool(makers) and all(m in runnable and m not in lost for m in makers)


def merge(results: list[TestResult], again: dict[str, list[TestResult]],
          retries: list[Retry]) -> tuple[list[TestResult], list[str]]:
    """(every test's result, notes): a unit judged again keeps the better of its two runs
    (again: {unit: its round-two results})."""
    kept, notes = {(r.unit, r.test): r for r in results}, []
    for retry in retries:
        unit, served = retry.unit, retry.group.served
        first = [r for r in results if r.unit == unit]
        second = again.get(unit, [])
        if sum(r.score for r in second) > sum(r.score for r in first):
            kept.update({(r.unit, r.test): r for r in second})
            if retry.mismatch:
                kept.update(_charge_cache_maker(retry, results))
            else:
                notes.append(f"{unit} was judged with the grader's {_names(served)} in place of yours, "
                             f"because your {_names(retry.causes)} {_fail(retry.causes)} "
                             f"{_their(retry.causes)} own tests: a bug costs points only in its own unit")
        elif not retry.mismatch:
            why = _still_failing(retry, second)
            kept.update({(r.unit, r.test): TestResult(r.unit, r.test, r.score, r.max_score,
                                                      why.get(r.test) or f"{r.reason} ({why['']})")
                         for r in first if r.score < r.max_score})
    return [kept[(r.unit, r.test)] for r in results], notes


def _charge_cache_maker(retry: Retry, results: list[TestResult]) -> dict:
    """The forward pass's tests, lost: the backward pass does better with the grader's."""
    maker = _names(retry.causes)
    why = (f"the cache your {maker} makes is not what your {retry.unit} reads: your {retry.unit} "
           f"does better with the grader's {maker}, whose outputs yours match")
    return {(r.unit, r.test): TestResult(r.unit, r.test, 0, r.max_score, why)
            for r in results if r.unit in retry.causes}


def _still_failing(retry: Retry, second: list[TestResult]) -> dict[str, str]:
    """{test: why the unit still loses its points though collaborators it relies on fail
    too} ("" for a test without a reason from round two). Round two's reason, where there is
    one, replaces round one's: it shows the unit's own bug with correct collaborators, and a
    reason holds one message of the student's code at most."""
    unit, causes = retry.unit, retry.causes
    how = " and ".join(f"{'is given the cache of' if c in STUDENT_DEPENDENCIES.get(unit, ()) else 'runs with'} "
                       f"your {c}" for c in causes)
    blame = f"your {unit} {how}, which {_fail(causes)} {_their(causes)} own tests"
    again = f"with the grader's {_names(retry.group.served)} in place of yours it fails too: "
    return {"": blame} | {r.test: f"{blame}; {again}{r.reason}" for r in second
                          if r.score < r.max_score and r.reason}


def _in_order(units: set[str]) -> tuple[str, ...]:
    return tuple(u for u in UNITS if u in units)


def _names(units) -> str:
    return ", ".join(units[:-1]) + " and " + units[-1] if len(units) > 1 else units[0]


def _fail(units) -> str:
    return "fail" if len(units) > 1 else "fails"


def _their(units) -> str:
    return "their" if len(units) > 1 else "its"
