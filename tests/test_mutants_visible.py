"""mutants/visible.py: the notebook's visible checks, run on a mutant's cells."""

import json
import re
import time

import pytest

from autograder import SOURCE_NOTEBOOK
from grading import mutated
from mutants import visible

pytestmark = pytest.mark.slow  # it runs the notebook's checks (about a minute)


def check_calls_in_check_cells() -> int:
    """check_close / check_equal calls in the notebook's check cells, counted from its text."""
    cells = json.loads(SOURCE_NOTEBOOK.read_text())["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return sum(len(re.findall(r"\bcheck_(?:close|equal)\(", s)) for s in sources if "with visible_check(" in s)


@pytest.fixture(scope="module")
def outcomes():
    sigmoid = mutated("rnn_step_forward", "torch.tanh(", "torch.sigmoid(")
    endless = mutated("dot_product_attention", "    ### BEGIN SOLUTION\n", "    ### BEGIN SOLUTION\n    while True:\n"
                      "        pass\n")
    crash = mutated("WordEmbedding", "        ### BEGIN SOLUTION\n", "        ### BEGIN SOLUTION\n"
                    "        import os\n        os._exit(3)\n")
    # 4 GiB of ones, touched: more than a child's memory headroom (2 GiB above the warm process).
    greedy = mutated("LSTM", "        ### BEGIN SOLUTION\n        a = ", "        ### BEGIN SOLUTION\n"
                     "        torch.ones(2**30).sum()\n        a = ")
    started = time.monotonic()
    found = visible.visible_check_results_many(
        [{}, {"rnn_step_forward": sigmoid}, {"dot_product_attention": endless}, {"WordEmbedding": crash},
         {"LSTM": greedy}], timeout=15, jobs=2)
    return found, time.monotonic() - started


def test_the_reference_passes_every_visible_check(outcomes):
    (reference, *_), _ = outcomes
    assert reference.error == "" and reference.failed == []
    assert len(reference.checks) == check_calls_in_check_cells()


def test_a_bug_fails_its_own_check_and_those_of_the_units_that_call_it(outcomes):
    (_, sigmoid, *_), _ = outcomes
    # rnn_step_forward's own check; rnn_step_backward's check differentiates the cache of
    # the student's rnn_step_forward (next_h went through a sigmoid, its backward assumes
    # tanh); the rnn captioner samples through RNN.step_forward, i.e. rnn_step_forward.
    # rnn_forward does not call it, nor does the captioner's loss (RNN.forward is rnn_forward).
    assert set(sigmoid.failed) == {"rnn_step_forward next_h", "CaptioningRNN (rnn) sample_rnn"} | {
        f"rnn_step_backward {d}" for d in ("dx", "dprev_h", "dWx", "dWh", "db")}
    assert sigmoid.error == ""


def test_an_endless_loop_times_out_and_a_crash_is_reported_without_stopping_the_others(outcomes):
    (reference, sigmoid, endless, crash, _), seconds = outcomes
    assert endless.error == "timed out after 15 s" and endless.checks == {}
    assert "exit status 3" in crash.error
    assert seconds < 15 + 30  # the loop's limit, and the others' runs beside it


def test_a_mutant_that_allocates_without_bound_fails_its_check_not_the_machine(outcomes):
    (*_, greedy), _ = outcomes
    assert "LSTM runs without error" in greedy.failed
