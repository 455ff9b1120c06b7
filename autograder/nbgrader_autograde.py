"""nbgrader integration: `nbgrader autograde` scores with the kit's grader, not by execution.

Stock autograde runs the whole submitted notebook in a kernel of the grader's machine and
gives a grade cell its points when it raises nothing. Here ``KitGrader`` takes the place of
nbgrader's ``Execute`` preprocessor in ``Autograde.autograde_preprocessors`` (see
assignment/nbgrader_config.py): it hands the notebook to ``autograder.grade`` (student code
runs only in the sandbox) and writes each unit's result into the unit's grade cell as
outputs, which nbgrader's own ``SaveAutoGrades`` turns into gradebook scores:

* a stdout stream: one line per test, with the reason for lost points (the feedback);
* an ``execute_result`` holding the unit's score, nbgrader's partial-credit convention.

Nothing else of the notebook is executed. With ``results_dir`` set (the course's
grader_results/, see autograder/batch.py), a result the batch grader already stored for the
same content is used as it is, so `make autograde JOBS=N` grades each submission once.
"""

import tempfile
from pathlib import Path

import nbformat
import torch
from traitlets import Bool, Unicode

from autograder import batch, checks, grade

REPO_ROOT = Path(__file__).resolve().parent.parent
GRADE_CELL_SUFFIX = "_autograded"

try:  # nbgrader is a dependency of the kit, but the grader itself does not need it
    from nbgrader.preprocessors import NbGraderPreprocessor
except ImportError:  # pragma: no cover
    NbGraderPreprocessor = object


def unit_feedback(result: grade.GradeResult, unit: str) -> tuple[str, int]:
    """(the lines shown in a unit's grade cell, the unit's score)."""
    tests = [t for t in result.tests if t.unit == unit]
    lines = [f"{t.test}: {t.score}/{t.max_score}" + (f" - {t.reason}" if t.reason else "") for t in tests]
    return "\n".join(lines) + "\n", sum(t.score for t in tests)


class KitGrader(NbGraderPreprocessor):
    """Scores a submission with the sandboxed grader and fills in its grade cells."""

    device = Unicode("cpu", help="cpu, cuda or auto").tag(config=True)
    allow_unsandboxed = Bool(False, help="grade where bubblewrap cannot run").tag(config=True)
    data = Unicode(str(REPO_ROOT / "data" / "coco.pt"), help="the COCO subset").tag(config=True)
    results_dir = Unicode("", help="the batch grader's stored results (a course directory's "
                                   "grader_results); empty: always grade").tag(config=True)

    _coco = None
    _fixture = None

    def preprocess(self, nb, resources):
        student = resources.get("nbgrader", {}).get("student", "")
        with tempfile.TemporaryDirectory(prefix="captioning-nbgrader-") as scratch:
            path = Path(scratch) / "submission.ipynb"
            nbformat.write(nb, path)
            result, store, key = None, None, None
            if self.results_dir:
                store = batch.ResultStore(Path(self.results_dir))
                key = batch.submission_key(path, batch.grader_fingerprint(grade.grader_secret()))
                result = store.get(student, key)
            if result is None:
                result = self._grade(path)
                if store is not None:
                    store.put(student, key, result)
        self.log.info("%s: %d/%d (sandbox: %s)", resources.get("nbgrader", {}).get("student"),
                      result.score, result.max_score, result.mode)
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
            if cell.cell_type != "code" or not grade_id.endswith(GRADE_CELL_SUFFIX):
                continue
            text, score = unit_feedback(result, grade_id[: -len(GRADE_CELL_SUFFIX)])
            cell.outputs = [
                nbformat.v4.new_output("stream", name="stdout", text=text),
                nbformat.v4.new_output("execute_result", data={"text/plain": str(score)}, execution_count=None),
            ]
        return nb, resources

    def _grade(self, path: Path) -> grade.GradeResult:
        if KitGrader._coco is None:  # once per nbgrader run, shared by every submission
            KitGrader._coco = torch.load(self.data, weights_only=True)
            KitGrader._fixture = checks.CaptionerFixture(KitGrader._coco)
        return grade.grade(path, coco=KitGrader._coco, fixture=KitGrader._fixture,
                           device=self.device, allow_unsandboxed=self.allow_unsandboxed)
