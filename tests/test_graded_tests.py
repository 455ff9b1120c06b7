"""The registry of graded tests (autograder/graded_tests.py) against points.toml."""

import inspect
import tomllib

import pytest

from autograder import checks, graded_tests



def test_every_test_with_points_is_declared_once_and_nothing_else_is():
    with open(checks.POINTS_FILE, "rb") as f:
        listed = [(unit, test) for unit, tests in tomllib.load(f).items() for test in tests]
    assert sorted(graded_tests.GRADED_TESTS) == sorted(listed)
    assert len(listed) == 23  # counted by hand in points.toml


def test_every_runner_takes_a_namespace_the_inputs_and_what_the_cases_share():
    for declared in graded_tests.GRADED_TESTS.values():
        assert list(inspect.signature(declared.run).parameters) == ["ns", "inputs", "shared"], declared


@pytest.mark.parametrize("change, message", [
    (("[LSTM]\n", "[LSTM]\nbackward = 0\n"), "no @graded_test for LSTM.backward"),
    (("gradients = 4\n", "gradients = 0\n"), None),  # a test worth 0 points is still a test
    (("[dot_product_attention]\nforward = 5\ngradients = 3\n", "[dot_product_attention]\nforward = 8\n"),
     "no points for dot_product_attention.gradients"),
])
def test_points_and_declarations_that_disagree_are_refused_naming_the_test(tmp_path, monkeypatch, change, message):
    points = tmp_path / "points.toml"
    text = checks.POINTS_FILE.read_text()
    assert change[0] in text
    text = text.replace(*change, 1)
    if message is None:  # keep the total at 100
        text = text.replace("forward = 4\n", "forward = 8\n", 1)
    points.write_text(text)
    monkeypatch.setattr(checks, "POINTS_FILE", points)
    if message is None:
        checks.load_points()
        return
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        checks.load_points()


def test_the_makefile_names_the_assignment_as_the_grader_does():
    """The Makefile cannot import the grader's ASSIGNMENT: it restates it, checked here."""
    import re
    from autograder import ASSIGNMENT, REPO_ROOT
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^ASSIGNMENT\s*:=\s*(\S+)$", makefile, re.M).group(1) == ASSIGNMENT
