"""Shared tools of the grader's tests: make a submission, grade it, see what it lost."""

import functools
from pathlib import Path

import torch

from autograder import NOTEBOOK_NAME, SOURCE_NOTEBOOK, checks, grade
from autograder.submission import write_submission  # noqa: F401 (the tests' helper too)
from conftest import COCO_PT
from solution import source as reference

INSTRUCTOR_NOTEBOOK = SOURCE_NOTEBOOK
RELEASED_NOTEBOOK_NAME = NOTEBOOK_NAME
TEST_SECRET = b"tests-only secret"


def mutated(unit: str, old: str, new: str, count: int = 1) -> str:
    """The reference code of unit with old replaced by new (old must occur count times)."""
    code = reference.unit_source(unit)
    found = code.count(old)
    if found != count:
        raise AssertionError(f"{old!r} occurs {found} times in the reference {unit}, expected {count}")
    return code.replace(old, new)


@functools.lru_cache(maxsize=1)
def _coco_and_fixture():
    coco = torch.load(COCO_PT, weights_only=True)
    return coco, checks.CaptionerFixture(coco)


def grade_notebook(path: Path, **kwargs) -> grade.GradeResult:
    """Grade as the CLI does (sandboxed, CPU), with a fixed secret for reproducible tests."""
    coco, fixture = _coco_and_fixture()
    return grade.grade(path, coco=coco, fixture=fixture, secret=TEST_SECRET, **kwargs)


def lost(result: grade.GradeResult) -> set[tuple[str, str]]:
    """(unit, test) of every test that lost points."""
    return {(t.unit, t.test) for t in result.tests if t.score < t.max_score}


def all_tests_of(*units: str) -> set[tuple[str, str]]:
    """Every (unit, test) of the given units."""
    points = checks.load_points()
    return {(u, t) for u in units for t in points[u]}


def failures(result: grade.GradeResult) -> str:
    """The lost tests and their reasons, for assertion messages."""
    return "\n".join(f"{t.unit}.{t.test}: {t.reason}" for t in result.tests if t.score < t.max_score)
