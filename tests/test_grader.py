"""The grader end to end: reference, stubs, determinism, reports, command line."""

import json
import subprocess
import sys

import pytest

from autograder import ASSIGNMENT, COURSE_DIR, NOTEBOOK_NAME, jobs, reports, submission_sandbox
from conftest import CUDA, REPO_ROOT
from grading import (INSTRUCTOR_NOTEBOOK, failures, grade_notebook, lost, mutated, all_tests_of,
                     write_submission)
from solution import source as reference

pytestmark = pytest.mark.slow  # gradings, batches or the command line: not in make test-fast

RELEASED = COURSE_DIR / "release" / ASSIGNMENT / NOTEBOOK_NAME


def test_reference_scores_100():
    result = grade_notebook(INSTRUCTOR_NOTEBOOK)
    assert result.score == result.max_score == 100, failures(result)
    assert result.mode == "bwrap"


def test_released_stubs_score_0_with_a_reason_for_every_test(tmp_path):
    stubs = {unit: reference.strip_solutions(reference.unit_source(unit)) for unit in reference.graded_units()}
    result = grade_notebook(write_submission(tmp_path / "stubs.ipynb", stubs))
    assert result.score == 0 and result.max_score == 100
    assert all("NotImplementedError" in t.reason for t in result.tests), failures(result)


def test_the_same_submission_gets_identical_results(tmp_path):
    bug = {"rnn_forward": mutated("rnn_forward", "torch.tanh(", "torch.sigmoid(")}
    path = write_submission(tmp_path / "s.ipynb", bug)
    first, second = tmp_path / "1.json", tmp_path / "2.json"
    reports.write_results(grade_notebook(path), first)
    reports.write_results(grade_notebook(path), second)
    assert first.read_bytes() == second.read_bytes()
    # rnn_forward only: rnn_backward, fed its cache, is judged again with the grader's rnn_forward
    assert json.loads(first.read_text())["score"] == 100 - 5


def test_a_unit_without_its_cell_loses_only_its_tests(tmp_path):
    notebook = write_submission(tmp_path / "s.ipynb")
    text = notebook.read_text().replace('"grade_id": "WordEmbedding"', '"grade_id": "renamed"')
    notebook.write_text(text)
    result = grade_notebook(notebook)
    assert lost(result) == all_tests_of("WordEmbedding")
    assert any("no solution cell" in n for n in result.notes)


def test_a_forbidden_module_costs_that_units_points(tmp_path):
    code = reference.unit_source("LSTM") + "\n\n_builtin = torch.nn.LSTM(3, 4)\n"
    result = grade_notebook(write_submission(tmp_path / "s.ipynb", {"LSTM": code}))
    assert lost(result) == all_tests_of("LSTM")
    assert all("torch.nn.LSTM" in t.reason for t in result.tests if t.unit == "LSTM")


def test_results_json_follows_gradescopes_schema(tmp_path):
    path = tmp_path / "results.json"
    reports.write_results(grade_notebook(INSTRUCTOR_NOTEBOOK), path)
    results = json.loads(path.read_text())
    assert results["score"] == 100 and results["max_score"] == 100
    assert "sandbox (bubblewrap)" in results["output"]
    assert len(results["tests"]) == 23
    for test in results["tests"]:
        assert set(test) == {"name", "score", "max_score", "output", "visibility"}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "autograder", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)


def test_cli_writes_results_and_exits_0_whatever_the_score(tmp_path):
    notebook = tmp_path / "garbage.ipynb"
    notebook.write_text("{ this is not a notebook")
    done = run_cli("grade", notebook, "--results", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["score"] == 0 and "not a Jupyter notebook" in results["output"]
    assert "total" in done.stdout


def test_cli_exits_2_when_it_cannot_grade(tmp_path):
    done = run_cli("grade", INSTRUCTOR_NOTEBOOK, "--results", tmp_path / "r.json",
                   "--data", tmp_path / "missing.pt")
    assert done.returncode == 2 and "make data" in done.stderr
    assert not (tmp_path / "r.json").exists()


def test_worker_groups_never_hold_the_reference_of_a_unit_they_grade():
    groups = submission_sandbox.WORKER_GROUPS + tuple(
        submission_sandbox.again_group(u, c) for u, c in submission_sandbox.STUDENT_COLLABORATORS.items())
    for group in groups:
        assert not set(group.served) & set(group.units), group
    assert sorted(u for g in submission_sandbox.WORKER_GROUPS for u in g.units) == sorted(reference.graded_units())


def test_a_unit_is_graded_after_every_unit_served_to_it():
    """The groups share one sandbox, one after the other: what a served reference tells a
    unit may reach only units graded after it, so none of those may be served to it."""
    order = [unit for g in submission_sandbox.WORKER_GROUPS for unit in g.units]
    for group in submission_sandbox.WORKER_GROUPS:
        for unit in group.units:
            for other in group.served:
                assert order.index(other) < order.index(unit), (unit, other)


PIPE_PROBE = """
import os as _os, stat as _stat

_found = []
for _name in _os.listdir("/proc/self/fd"):
    try:
        _fd = int(_name)
        if not _stat.S_ISFIFO(_os.fstat(_fd).st_mode):
            continue
        _os.set_blocking(_fd, False)
        _data = _os.read(_fd, 1 << 16)
    except (OSError, ValueError):
        continue
    if _data:
        _found.append("%d: %d bytes" % (_fd, len(_data)))
raise RuntimeError(("LEAK " + ", ".join(_found)) if _found else "probe: nothing found")
"""


def test_a_unit_reads_no_later_groups_job(tmp_path):
    """While the units group and AttentionLSTM run, the later groups' jobs wait in their
    pipes; a unit's process holds none of them (fails when the worker's children keep the
    job pipes of later groups open: 'LEAK 5: 65536 bytes')."""
    probes = {"WordEmbedding": PIPE_PROBE, "AttentionLSTM": PIPE_PROBE}
    result = grade_notebook(write_submission(tmp_path / "s.ipynb", probes))
    reasons = [t.reason for t in result.tests if t.unit in probes]
    assert reasons and all("probe: nothing found" in r for r in reasons), reasons
    assert lost(result) == all_tests_of(*probes), failures(result)


def test_no_job_carries_a_solution_line(tmp_path):
    """The jobs sent into the sandboxes hold stubs of the served units, never their code."""
    import io
    import numpy as np
    from grading import _coco_and_fixture
    from autograder import checks
    coco, fixture = _coco_and_fixture()
    cells = {u: reference.strip_solutions(reference.unit_source(u)) for u in reference.graded_units()}
    tests = checks.build_tests(1, coco, fixture)
    solution = set(reference.solution_lines(reference.read_source()))
    again = [submission_sandbox.again_group(u, c) for u, c in submission_sandbox.STUDENT_COLLABORATORS.items()]
    for group in [*submission_sandbox.WORKER_GROUPS, *again]:
        blob = jobs.job_blob(group, group.units, cells, tests, "cpu", set(cells))
        job = np.load(io.BytesIO(blob))["job.json"].tobytes().decode()
        leaked = [line for line in solution if len(line) > 12 and line in job]
        assert not leaked, leaked[:5]


def test_hidden_cases_do_not_depend_on_the_order_they_are_drawn_in():
    """A grading draws each group's tests as its job is sent (checks.HiddenTests): the
    captioner's first here, the rest after, against each test drawn on its own."""
    import torch
    from grading import _coco_and_fixture
    from autograder import checks
    coco, fixture = _coco_and_fixture()
    late_first = checks.HiddenTests(7, coco, fixture)
    late_first.of(("CaptioningRNN", "AttentionLSTM"))
    tests = list(late_first)
    points = checks.load_points()
    assert [(t.unit, t.name) for t in tests] == [(u, n) for u, unit_tests in points.items() for n in unit_tests]
    for test in tests:
        alone = checks.build_test(checks.graded_tests.GRADED_TESTS[(test.unit, test.name)], test.points, 7,
                                  checks.CaptionerFixture(coco))
        assert test.shared == alone.shared and len(test.cases) == len(alone.cases)
        for case, other in zip(test.cases, alone.cases):
            assert case.inputs.keys() == other.inputs.keys()
            assert all(torch.equal(case.inputs[k], other.inputs[k]) for k in case.inputs), (test.unit, test.name)


def test_a_syntax_error_costs_its_unit_with_that_reason(tmp_path):
    code = reference.unit_source("dot_product_attention").replace("attn, attn_weights = None, None",
                                                                  "attn, attn_weights = None None")
    result = grade_notebook(write_submission(tmp_path / "s.ipynb", {"dot_product_attention": code}))
    assert lost(result) == all_tests_of("dot_product_attention")
    assert all("syntax error (line" in t.reason for t in result.tests if t.unit == "dot_product_attention")


GPU_HOG = """

import torch as _t
_hog = _t.empty(int(_t.cuda.get_device_properties(0).total_memory * 0.3), dtype=_t.uint8, device="cuda")
"""


@CUDA
def test_on_the_gpu_the_reference_scores_100_and_a_unit_gets_a_bounded_share_of_its_memory(tmp_path):
    """--device cuda: every unit's process may hold CUDA_MEMORY_FRACTION of the GPU (so that
    JOBS submissions side by side cannot starve each other); a cell that takes 30% fails on
    its own, everything else scores."""
    assert grade_notebook(INSTRUCTOR_NOTEBOOK, device="cuda").score == 100
    hog = {"WordEmbedding": reference.unit_source("WordEmbedding") + GPU_HOG}
    result = grade_notebook(write_submission(tmp_path / "s.ipynb", hog), device="cuda")
    assert result.device == "cuda"
    assert lost(result) == all_tests_of("WordEmbedding"), failures(result)
    assert all("OutOfMemoryError" in t.reason for t in result.tests if t.unit == "WordEmbedding")
