"""Every buggy submission of the catalogue loses exactly the points of the tests it breaks."""

import pytest

from catalogue.buggy import BUGS, MISSED
from grading import failures, grade_notebook, lost, write_submission

pytestmark = pytest.mark.slow  # gradings, batches or the command line: not in make test-fast


def _param(bug):
    marks = [pytest.mark.xfail(strict=True, reason=MISSED[bug.id])] if bug.id in MISSED else []
    return pytest.param(bug, id=bug.id, marks=marks)


def test_the_catalogue_is_well_formed():
    assert len({bug.id for bug in BUGS}) == len(BUGS) >= 27
    for bug in BUGS:
        assert bug.why and bug.loses, bug.id
        assert all(unit == bug.unit for unit, _ in bug.loses), bug.id  # a bug costs only its own unit
        bug.unit_code()  # every replacement applies exactly as often as it says
    assert set(MISSED) <= {bug.id for bug in BUGS}


@pytest.mark.parametrize("bug", [_param(bug) for bug in BUGS])
def test_a_buggy_submission_loses_exactly_the_tests_it_breaks(bug, tmp_path):
    result = grade_notebook(write_submission(tmp_path / f"{bug.id}.ipynb", bug.submission()))
    assert lost(result) == bug.loses, f"{bug.why}\n{failures(result)}"
