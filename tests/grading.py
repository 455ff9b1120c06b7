"""Shared tools of the grader's tests: make a submission, grade it, see what it lost."""

import functools
from pathlib import Path

import nbformat
import torch

from autograder import checks, grade
from conftest import COCO_PT, REPO_ROOT
from solution import source as reference

INSTRUCTOR_NOTEBOOK = REPO_ROOT / "assignment" / "source" / "rnn_captioning" / "rnn_captioning.ipynb"
RELEASED_NOTEBOOK_NAME = "rnn_captioning.ipynb"
TEST_SECRET = b"tests-only secret"


def mutated(unit: str, old: str, new: str, count: int = 1) -> str:
    """The reference code of unit with old replaced by new (old must occur count times)."""
    code = reference.unit_source(unit)
    found = code.count(old)
    if found != count:
        raise AssertionError(f"{old!r} occurs {found} times in the reference {unit}, expected {count}")
    return code.replace(old, new)


def write_submission(path: Path, cells: dict[str, str] | None = None,
                     notebook: Path = INSTRUCTOR_NOTEBOOK) -> Path:
    """A copy of notebook (the instructor's by default) with the given units' cells replaced."""
    nb = nbformat.read(notebook, as_version=4)
    cells = dict(cells or {})
    for cell in nb.cells:
        unit = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution") and unit in cells:
            cell.source = cells.pop(unit)
    assert not cells, f"no solution cell for {sorted(cells)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


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
