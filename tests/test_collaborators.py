"""A bug costs points only in its own unit (autograder/collaborators.py).

A unit that loses points while a student collaborator it relies on (the step functions
its sequence function calls, the forward pass whose cache it reads) fails its own tests
is judged again with the grader's collaborator served in its place. The planning is
tested on hand-made round-one results; the policy end to end with bugs planted in each
step function of a submission whose sequence functions call them (the CS231n way).
"""

import pytest

from autograder import collaborators, grade, scoring
from autograder.reports import TestResult as Result
from catalogue.correct import RNN_BACKWARD_CALLS_THE_STEP, RNN_FORWARD_CALLS_THE_STEP, STEP_BACKWARD_EINSUM, \
    STEP_FORWARD_ADDMM_PREACTIVATION_CACHE, STEP_FORWARD_MATMUL_DICT_CACHE, solved
from grading import all_tests_of, failures, grade_notebook, lost, mutated, write_submission
from solution import source as reference

RNN_UNITS = ("rnn_step_forward", "rnn_step_backward", "rnn_forward", "rnn_backward")
CALLING_THE_STEPS = {"rnn_forward": RNN_FORWARD_CALLS_THE_STEP, "rnn_backward": RNN_BACKWARD_CALLS_THE_STEP}
NO_BIAS = mutated("rnn_step_forward", "prev_h.mm(Wh) + b)", "prev_h.mm(Wh))")
UNTRANSPOSED = mutated("rnn_step_backward", "dprev_h = da.mm(Wh.t())", "dprev_h = da.mm(Wh)")
NO_FEEDBACK = mutated("rnn_forward", "prev_h = torch.tanh(x_proj[:, t] + prev_h.mm(Wh))",
                      "prev_h = torch.tanh(x_proj[:, t] + h0.mm(Wh))")


def round_one(*failing: str) -> list[Result]:
    """Every test of the RNN units, full marks but for the failing units' tests."""
    return [Result(unit, test, 0 if unit in failing else 1, 1, "wrong" if unit in failing else "")
            for unit, test in sorted(all_tests_of(*RNN_UNITS))]


def reference_cells(**cells: str) -> dict[str, str]:
    return {**{u: reference.unit_source(u) for u in reference.graded_units()}, **cells}


def planned(cells, *failing, own_exclusions=()) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """{unit judged again: (what is served to it, the causes)}."""
    excluded = {**grade.without_cache(dict.fromkeys(own_exclusions, "")), **dict.fromkeys(own_exclusions, "")}
    runnable = set(cells) - set(excluded)
    retries = collaborators.plan(round_one(*failing), set(own_exclusions), cells, runnable)
    return {r.unit: (r.group.served, r.causes) for r in retries}


# ---------------------------------------------------------------------------------------
# Planning round two (no sandbox)
# ---------------------------------------------------------------------------------------


def test_a_step_forward_bug_has_every_unit_that_relies_on_it_judged_again():
    cells = reference_cells(**CALLING_THE_STEPS)
    plan = planned(cells, *RNN_UNITS)  # a bias dropped in rnn_step_forward fails all four
    assert plan == {
        "rnn_step_backward": (("rnn_step_forward",), ("rnn_step_forward",)),
        "rnn_forward": (("rnn_step_forward",), ("rnn_step_forward",)),
        # the backward step comes with the forward step: it reads the cache that one makes
        "rnn_backward": (("rnn_step_forward", "rnn_step_backward"), ("rnn_step_forward",)),
    }


def test_a_sequence_function_that_does_not_call_the_steps_is_not_judged_again_for_them():
    assert planned(reference_cells(), "rnn_step_forward", "rnn_step_backward", "rnn_forward") == {
        "rnn_step_backward": (("rnn_step_forward",), ("rnn_step_forward",))}


def test_a_sequence_forward_that_fails_alone_is_served_to_its_backward():
    plan = planned(reference_cells(rnn_forward=NO_FEEDBACK), "rnn_forward", "rnn_backward")
    assert plan == {"rnn_backward": (("rnn_forward",), ("rnn_forward",))}


@pytest.mark.parametrize("failing, own_exclusions", [
    (("rnn_step_forward", "rnn_step_backward"), ("rnn_step_backward",)),  # its own cell cannot run
    (("rnn_step_forward",), ()),  # the units relying on it pass: nothing to give back
])
def test_nothing_is_judged_again_without_a_failing_unit_and_a_failing_collaborator(failing, own_exclusions):
    assert planned(reference_cells(**CALLING_THE_STEPS), *failing, own_exclusions=own_exclusions) == {}


@pytest.mark.parametrize("backward, forward", [("rnn_step_backward", "rnn_step_forward"),
                                               ("rnn_backward", "rnn_forward")])
def test_a_failing_backward_whose_forward_passes_is_tried_with_the_graders_cache(backward, forward):
    """Its own bug, or a cache its forward lays out otherwise than it reads: round two tells."""
    plan = planned(reference_cells(), backward)
    assert plan == {backward: ((forward,), (forward,))}
    retry, = collaborators.plan(round_one(backward), set(), reference_cells(), set(reference_cells()))
    assert retry.mismatch


def test_a_backward_that_does_better_with_the_graders_cache_charges_its_forward():
    results = round_one("rnn_step_backward")
    retries = collaborators.plan(results, set(), reference_cells(), set(reference_cells()))
    passes = [Result("rnn_step_backward", "gradients", 1, 1)]
    merged, notes = collaborators.merge(results, {"rnn_step_backward": passes}, retries)
    by_unit = {r.unit: r for r in merged}
    assert by_unit["rnn_step_backward"].score == 1 and by_unit["rnn_step_forward"].score == 0
    assert "the cache your rnn_step_forward makes is not what your rnn_step_backward reads" in \
        by_unit["rnn_step_forward"].reason
    # no better with the grader's cache: its own bug, charged to it alone
    fails = [Result("rnn_step_backward", "gradients", 0, 1, "x")]
    merged, _ = collaborators.merge(results, {"rnn_step_backward": fails}, retries)
    assert merged == results


def test_a_unit_whose_cache_maker_cannot_run_is_judged_with_the_graders():
    cells = reference_cells(rnn_step_forward="def rnn_step_forward(:\n")
    plan = planned(cells, "rnn_step_forward", "rnn_step_backward", own_exclusions=("rnn_step_forward",))
    assert plan == {"rnn_step_backward": (("rnn_step_forward",), ("rnn_step_forward",))}


def test_a_step_function_that_cannot_run_is_served_to_the_sequence_functions_that_call_it():
    """A syntax error in rnn_step_forward costs its own points only, as a bug in it does:
    rnn_forward, which calls it, is judged with the grader's (it used to lose 5 points, and
    rnn_backward 8, its reason blaming rnn_forward)."""
    cells = reference_cells(rnn_step_forward="def rnn_step_forward(:\n", **CALLING_THE_STEPS)
    plan = planned(cells, *RNN_UNITS, own_exclusions=("rnn_step_forward",))
    assert plan == {
        "rnn_step_backward": (("rnn_step_forward",), ("rnn_step_forward",)),
        "rnn_forward": (("rnn_step_forward",), ("rnn_step_forward",)),
        "rnn_backward": (("rnn_step_forward", "rnn_step_backward"), ("rnn_step_forward",)),
    }


# rnn_backward calls rnn_step_backward on step caches it builds from the reference's cache;
# it never calls rnn_step_forward, nor does the reference rnn_forward.
BACKWARD_CALLS_THE_STEP_ON_ITS_OWN_CACHES = solved("rnn_backward", """
    x, h0, Wx, Wh, h = cache
    dx = torch.zeros_like(x)
    dWx, dWh, db = torch.zeros_like(Wx), torch.zeros_like(Wh), torch.zeros_like(Wh[0])
    dprev = torch.zeros_like(h0)
    for t in reversed(range(x.shape[1])):
        prev_h = h0 if t == 0 else h[:, t - 1]
        dx_t, dprev, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t] + dprev, (x[:, t], prev_h, Wx, Wh, h[:, t]))
        dx[:, t] = dx_t
        dWx, dWh, db = dWx + dWx_t, dWh + dWh_t, db + db_t
    dh0 = dprev
""")


def test_a_collaborator_failing_through_a_unit_the_judged_one_does_not_use_is_a_cause():
    """Both step functions have a bug; rnn_backward calls only rnn_step_backward, whose failure
    cannot come through rnn_step_forward there: it is served (it used to cost rnn_backward's
    8 points, judged never again because rnn_step_backward does not fail "on its own")."""
    cells = reference_cells(rnn_backward=BACKWARD_CALLS_THE_STEP_ON_ITS_OWN_CACHES)
    plan = planned(cells, "rnn_step_forward", "rnn_step_backward", "rnn_backward")
    assert plan == {
        "rnn_step_backward": (("rnn_step_forward",), ("rnn_step_forward",)),
        "rnn_backward": (("rnn_step_forward", "rnn_step_backward"), ("rnn_step_backward",)),
    }


def test_a_unit_whose_cache_maker_cannot_run_is_served_the_step_it_calls_too():
    cells = reference_cells(rnn_forward="def rnn_forward(:\n", rnn_backward=BACKWARD_CALLS_THE_STEP_ON_ITS_OWN_CACHES)
    plan = planned(cells, "rnn_step_backward", "rnn_forward", "rnn_backward", own_exclusions=("rnn_forward",))
    assert plan == {"rnn_backward": (("rnn_step_forward", "rnn_step_backward", "rnn_forward"),
                                     ("rnn_step_backward", "rnn_forward")),
                    # its forward step passes: does it do better with the grader's cache?
                    "rnn_step_backward": (("rnn_step_forward",), ("rnn_step_forward",))}


def test_the_better_run_is_kept_and_a_kept_failure_names_its_cause():
    cells = reference_cells(**CALLING_THE_STEPS)
    results = round_one(*RNN_UNITS)
    retries = collaborators.plan(results, set(), cells, set(cells))
    again = {"rnn_forward": [Result("rnn_forward", "forward", 1, 1)],
             "rnn_backward": [Result("rnn_backward", "gradients", 0, 1, "output dx: relative error 1")]}
    merged, notes = collaborators.merge(results, again, retries)
    by_unit = {r.unit: r for r in merged}
    assert [r.unit for r in merged] == [r.unit for r in results]
    assert by_unit["rnn_forward"].score == 1 and by_unit["rnn_step_forward"].score == 0
    assert notes == ["rnn_forward was judged with the grader's rnn_step_forward in place of yours, because "
                     "your rnn_step_forward fails its own tests: a bug costs points only in its own unit"]
    # round two's reason in place of round one's ("wrong"): one message of the student's code at most
    assert by_unit["rnn_backward"].reason == (
        "your rnn_backward runs with your rnn_step_forward, which fails its own tests; with the "
        "grader's rnn_step_forward and rnn_step_backward in place of yours it fails too: output dx: "
        "relative error 1")
    # not run again (its sandbox died, say): the first run's result, with its cause
    assert by_unit["rnn_step_backward"].score == 0 and "rnn_step_forward" in by_unit["rnn_step_backward"].reason


# ---------------------------------------------------------------------------------------
# End to end: bugs planted in the step functions that the sequence functions call
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("unit, code", [("rnn_step_forward", NO_BIAS), ("rnn_step_backward", UNTRANSPOSED),
                                        ("rnn_step_forward", "def rnn_step_forward(:\n")],
                         ids=["step_forward_no_bias", "step_backward_untransposed", "step_forward_syntax_error"])
def test_a_bug_in_a_step_function_costs_only_its_own_points(unit, code, tmp_path):
    result = grade_notebook(write_submission(tmp_path / "s.ipynb", {**CALLING_THE_STEPS, unit: code}))
    assert lost(result) == all_tests_of(unit), failures(result)
    assert any(f"because your {unit} fails its own tests" in note for note in result.notes), result.notes


@pytest.mark.slow
def test_a_units_own_bug_still_costs_it_and_the_reason_names_the_collaborator(tmp_path):
    own_bug = RNN_FORWARD_CALLS_THE_STEP.replace("rnn_step_forward(x[:, t], prev_h,", "rnn_step_forward(x[:, t], h0,")
    assert own_bug != RNN_FORWARD_CALLS_THE_STEP
    cells = {**CALLING_THE_STEPS, "rnn_forward": own_bug, "rnn_step_forward": NO_BIAS}
    result = grade_notebook(write_submission(tmp_path / "s.ipynb", cells))
    # rnn_backward reads the caches of the student's rnn_forward: h0 at every step is its
    # own input, so its gradients are those of what rnn_forward computed, not the reference's
    assert all_tests_of("rnn_step_forward", "rnn_forward") <= lost(result), failures(result)
    [reason] = [t.reason for t in result.tests if t.unit == "rnn_forward"]
    assert "runs with your rnn_step_forward, which fails its own tests" in reason
    assert "with the grader's rnn_step_forward in place of yours it fails too" in reason


@pytest.mark.slow
def test_bugs_in_both_steps_cost_a_backward_pass_that_calls_only_the_backward_step_nothing(tmp_path):
    cells = {"rnn_step_forward": NO_BIAS, "rnn_step_backward": UNTRANSPOSED,
             "rnn_backward": BACKWARD_CALLS_THE_STEP_ON_ITS_OWN_CACHES}
    result = grade_notebook(write_submission(tmp_path / "s.ipynb", cells))
    assert lost(result) == all_tests_of("rnn_step_forward", "rnn_step_backward"), failures(result)


@pytest.mark.slow
def test_breaking_a_forward_pass_on_purpose_does_not_pay(tmp_path):
    """A step forward caching its pre-activation passes its own tests, and the reference's
    rnn_step_backward cannot read that cache. Were the backward charged (6 points), dropping
    the bias on purpose (4 points, and the backward judged again with the grader's forward)
    would pay; the forward is charged either way (fails without the cache-mismatch rule:
    94 against 96)."""
    honest = write_submission(tmp_path / "honest.ipynb", {"rnn_step_forward": STEP_FORWARD_ADDMM_PREACTIVATION_CACHE})
    broken = STEP_FORWARD_ADDMM_PREACTIVATION_CACHE.replace("torch.addmm(b, x, Wx)", "torch.mm(x, Wx)")
    assert broken != STEP_FORWARD_ADDMM_PREACTIVATION_CACHE
    on_purpose = write_submission(tmp_path / "on_purpose.ipynb", {"rnn_step_forward": broken})
    honest_result = grade_notebook(honest)
    assert lost(honest_result) == all_tests_of("rnn_step_forward"), failures(honest_result)
    assert grade_notebook(on_purpose).score <= honest_result.score


@pytest.mark.slow
def test_a_cache_in_another_layout_is_named_as_the_cause(tmp_path):
    """A dict cache cannot be read from the reference's tuple: round two cannot isolate
    rnn_step_backward, and its reason says which unit to fix."""
    dict_cache_no_bias = STEP_FORWARD_MATMUL_DICT_CACHE.replace("prev_h @ Wh + b)", "prev_h @ Wh)")
    assert dict_cache_no_bias != STEP_FORWARD_MATMUL_DICT_CACHE
    cells = {"rnn_step_forward": dict_cache_no_bias, "rnn_step_backward": STEP_BACKWARD_EINSUM}
    result = grade_notebook(write_submission(tmp_path / "s.ipynb", cells))
    assert lost(result) == all_tests_of("rnn_step_forward", "rnn_step_backward"), failures(result)
    [reason] = [t.reason for t in result.tests if t.unit == "rnn_step_backward"]
    assert "is given the cache of your rnn_step_forward, which fails its own tests" in reason


# Asks the grader for the gradients of its rnn_step_forward: rnn_step_backward's answer.
GRADIENT_THIEF = """
def rnn_step_backward(dnext_h, cache):
    ask = getattr(rnn_step_forward, "__glo" + "bals__")["_ask"]  # the stand-in's module
    x, prev_h, Wx, Wh, next_h = cache
    b = (torch.atanh(next_h) - x.mm(Wx) - prev_h.mm(Wh))[0]  # the cache has no b
    # one upstream gradient for each float output: next_h, then the cache's five tensors
    grads = [dnext_h] + [torch.zeros(0)] * 5
    request = {"args": (x, prev_h, Wx, Wh, b), "kwargs": {}, "params": {}, "grads": grads}
    return tuple(ask("backward", "rnn_step_forward", request))
"""


@pytest.mark.slow
@pytest.mark.parametrize("gradients", [False, True], ids=["defended", "undefended"])
def test_a_unit_judged_again_gets_no_gradients_from_the_grader(gradients, tmp_path, monkeypatch):
    """Without the defence (served gradients in round two) the thief scores rnn_step_backward:
    the test shows the attack is real, and that the forward-only service stops it."""
    if gradients:
        monkeypatch.setattr(collaborators, "again_group",
                            lambda unit, served: collaborators.Group(f"again:{unit}", (unit,), served))
    cells = {"rnn_step_forward": NO_BIAS, "rnn_step_backward": GRADIENT_THIEF}
    result = grade_notebook(write_submission(tmp_path / "s.ipynb", cells))
    stolen = lost(result) == all_tests_of("rnn_step_forward")
    assert stolen == gradients, failures(result)


@pytest.mark.slow
def test_a_unit_judged_again_shows_one_message_of_its_code_within_the_limit(tmp_path):
    """Both rounds put the student's exception into the reason: round two's replaces round
    one's, and both draw on the submission's one budget of student text."""
    loud = "def rnn_step_backward(dnext_h, cache):\n    raise ValueError('very long message ' * 500)\n"
    result = grade_notebook(write_submission(tmp_path / "s.ipynb", {"rnn_step_forward": NO_BIAS,
                                                                     "rnn_step_backward": loud}))
    [reason] = [t.reason for t in result.tests if t.unit == "rnn_step_backward"]
    assert reason.count("ValueError") == 1, reason
    assert "with the grader's rnn_step_forward in place of yours it fails too" in reason
    assert len(reason) <= scoring.STUDENT_TEXT_PER_TEST + 200, len(reason)
