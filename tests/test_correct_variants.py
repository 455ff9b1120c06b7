"""Correct submissions written differently from the reference score 100."""

import pytest

from catalogue.correct import MISSED, VARIANTS
from grading import failures, grade_notebook, write_submission
from solution import source as reference

pytestmark = pytest.mark.slow  # gradings, batches or the command line: not in make test-fast


def _param(variant):
    marks = [pytest.mark.xfail(strict=True, reason=MISSED[variant.id])] if variant.id in MISSED else []
    return pytest.param(variant, id=variant.id, marks=marks)


def test_every_unit_has_a_correct_variant():
    assert len(VARIANTS) >= 5 and len({v.id for v in VARIANTS}) == len(VARIANTS)
    covered = {unit for variant in VARIANTS if variant.id not in MISSED for unit in variant.cells}
    assert covered == set(reference.graded_units())
    assert set(MISSED) <= {v.id for v in VARIANTS}


@pytest.mark.parametrize("variant", [_param(v) for v in VARIANTS])
def test_a_correct_variant_scores_100(variant, tmp_path):
    result = grade_notebook(write_submission(tmp_path / f"{variant.id}.ipynb", variant.cells))
    assert result.score == result.max_score == 100, f"{variant.why}\n{failures(result)}"
