"""Threads in the cells whose code runs inside a hand-written backward pass (issue 22, item 2).

Autograd is off in a backward unit's process for its main thread only: grad mode is per
thread, and a new thread starts with it on. So no cell whose code runs there
(forbidden.THREADLESS_CELLS: the step functions, the sequence functions) may start a
thread, and the cell that starts one pays for it in its own unit, with a reason naming it;
the backward passes, judged again with the grader's forward, keep their points. Each
submission is graded for real (sandboxed); the expected losses are the rule's, the points
from points.toml.
"""

import pytest

from catalogue.correct import RNN_BACKWARD_CALLS_THE_STEP, RNN_FORWARD_CALLS_THE_STEP
from grading import all_tests_of, failures, grade_notebook, lost, mutated, write_submission

pytestmark = pytest.mark.slow  # gradings, batches or the command line: not in make test-fast

CALLING_THE_STEPS = {"rnn_forward": RNN_FORWARD_CALLS_THE_STEP, "rnn_backward": RNN_BACKWARD_CALLS_THE_STEP}

# The case: a correct step forward that also starts a daemon that spins (found by
# the static screen: it imports threading).
SPINNING_DAEMON = "import threading\n" + mutated(
    "rnn_step_forward", "    next_h = torch.tanh(",
    "    threading.Thread(target=lambda: [None for _ in iter(int, 1)], daemon=True).start()\n"
    "    next_h = torch.tanh(")
# A thread that never ends, started by a library call the static screen cannot know of.
NEVER_ENDING_LISTENER = "import logging.handlers\nimport queue\n" + mutated(
    "rnn_step_forward", "    next_h = torch.tanh(",
    "    logging.handlers.QueueListener(queue.SimpleQueue()).start()\n    next_h = torch.tanh(")
# rnn_forward's work done on a thread of asyncio's executor (no tensor passes through
# asyncio, which shows them: in a backward unit a tensor's repr is refused).
FORWARD_ON_A_THREAD = "import asyncio\n" + mutated(
    "rnn_forward", "def rnn_forward(x, h0, Wx, Wh, b):",
    "def rnn_forward(x, h0, Wx, Wh, b):\n"
    "    box = {}\n"
    "    asyncio.run(asyncio.to_thread(lambda: box.update(out=_rnn_forward(x, h0, Wx, Wh, b))))\n"
    "    return box['out']\n\n\n"
    "def _rnn_forward(x, h0, Wx, Wh, b):")

# The attack the refusal stops: grad mode is on in a new thread, so there the forward pass
# records a graph, whose nodes the cell calls by hand (no engine: the refused functions are
# never called), each attribute reached by getattr.
THREADED_AUTOGRAD = '''
import asyncio


def _gradients(dnext_h, cache):
    x, prev_h, Wx, Wh, next_h = cache
    b = torch.atanh(next_h) - x.mm(Wx) - prev_h.mm(Wh)  # (N, H): one bias per row
    leaves = [torch.zeros(t.shape, dtype=t.dtype, requires_grad=True) for t in (x, prev_h, Wx, Wh, b)]
    inputs = [leaf + value for leaf, value in zip(leaves, (x, prev_h, Wx, Wh, b))]
    out = torch.tanh(inputs[0].mm(inputs[2]) + inputs[1].mm(inputs[3]) + inputs[4])
    found = {}

    def walk(node, gradient):
        if node is None:
            return
        if hasattr(node, "variable"):  # a leaf's accumulator
            key = id(getattr(node, "variable"))
            found[key] = found.get(key, 0) + gradient
            return
        outs = node(gradient)
        outs = outs if isinstance(outs, tuple) else (outs,)
        for (child, _), child_gradient in zip(getattr(node, "next_" + "functions"), outs):
            if child_gradient is not None:
                walk(child, child_gradient)

    walk(getattr(out, "grad" + "_fn"), dnext_h)
    dx, dprev_h, dWx, dWh, db = (found[id(leaf)] for leaf in leaves)
    return dx, dprev_h, dWx, dWh, db.sum(dim=0)


def rnn_step_backward(dnext_h, cache):
    # No tensor passes through asyncio, which shows them (a tensor's repr is refused here).
    box = {}
    asyncio.run(asyncio.to_thread(lambda: box.update(grads=_gradients(dnext_h, cache))))
    return box["grads"]
'''


def reason_of(result, unit: str) -> str:
    [reason] = {t.reason for t in result.tests if t.unit == unit and t.score < t.max_score}
    return reason


@pytest.mark.parametrize("cells", [{"rnn_step_forward": SPINNING_DAEMON},
                                   {**CALLING_THE_STEPS, "rnn_step_forward": SPINNING_DAEMON},
                                   {**CALLING_THE_STEPS, "rnn_step_forward": NEVER_ENDING_LISTENER}],
                         ids=["spinning_daemon", "spinning_daemon_called_by_the_sequences", "never_ending_listener"])
def test_a_thread_in_the_step_forward_costs_the_step_forward_alone(cells, tmp_path):
    """Fails without the fix: rnn_step_forward kept its 4 points and both backward passes
    lost theirs, "in your rnn_step_forward cell, line 2: threading is not allowed here: the
    backward pass must be written by hand, without autograd" (the listener cost nothing)."""
    result = grade_notebook(write_submission(tmp_path / "s.ipynb", cells))
    assert lost(result) == all_tests_of("rnn_step_forward"), failures(result)
    reason = reason_of(result, "rnn_step_forward")
    assert "threads are not allowed in rnn_step_forward" in reason, reason
    assert "without autograd" not in reason


def test_a_thread_in_the_sequence_forward_costs_the_sequence_forward_alone(tmp_path):
    """Fails without the fix: the thread cost nothing."""
    result = grade_notebook(write_submission(tmp_path / "s.ipynb", {"rnn_forward": FORWARD_ON_A_THREAD}))
    assert lost(result) == all_tests_of("rnn_forward"), failures(result)
    assert "threads are not allowed in rnn_forward" in reason_of(result, "rnn_forward")


def test_a_thread_cannot_bring_autograd_back_into_a_backward_pass(tmp_path):
    """Fails without the fix: the graph recorded on the thread gave rnn_step_backward its 6
    points without a line of its backward pass written by hand."""
    result = grade_notebook(write_submission(tmp_path / "s.ipynb", {"rnn_step_backward": THREADED_AUTOGRAD}))
    assert lost(result) == all_tests_of("rnn_step_backward"), failures(result)
    assert "threads are not allowed in rnn_step_backward" in reason_of(result, "rnn_step_backward")
