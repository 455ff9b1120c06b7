"""A class's verdicts do not depend on load (issue 11): the trial of `make bench-load`.

Ten submissions that touch every limit a busy machine could move (an endless loop, a loop
that sleeps, legal heavy computing and sleeping, a cell that kills its sandbox, a flood of
output, a forked spinner...) are graded with JOBS=2 on the machine as it is, then three
times beside four processes spinning on its CPUs: every student must get the same status,
scores and reasons each time. With wall-clock limits, or with the time and CPU limits equal
(an endless loop then met one or the other first, by chance), the reasons differed.
"""

import pytest

from autograder import sandbox
from benchmarks import load

pytestmark = pytest.mark.slow  # gradings, batches or the command line: not in make test-fast


@pytest.mark.skipif(not sandbox.sandbox_status()[0], reason="needs bwrap: the batch grades in sandboxes")
def test_a_class_gets_the_same_verdicts_beside_four_cpu_bound_processes(tmp_path):
    lines = []
    differences = load.trial(tmp_path, runs=3, hogs=4, jobs=2, echo=lines.append)
    assert not differences, "\n".join(lines + differences)
    # bug: rnn_forward's 5 points (rnn_backward, fed its cache, is judged again with the grader's)
    expected = {"correct": 100, "stubs": 0, "bug": 95, "heavy_but_legal": 100, "sleeps_3_s": 100,
                "prints_a_flood": 100, "forks_a_spinner": 100}
    scores = {s: sum(t[2] for t in tests) for s, (status, tests) in load.verdicts(tmp_path / "course").items()}
    assert {s: scores[s] for s in expected} == expected, scores
    for student, unit in (("endless_loop", "WordEmbedding"), ("sleeps_forever", "LSTM"),
                          ("kills_its_sandbox", "WordEmbedding")):
        assert scores[student] < 100, (student, scores[student])
