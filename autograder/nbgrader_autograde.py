"""nbgrader integration: `nbgrader autograde` scores with the kit's grader, not by execution.

Stock autograde runs the whole submitted notebook in a kernel of the grader's machine and
gives a grade cell its points when it raises nothing. Here ``KitGrader`` takes the place of
nbgrader's ``Execute`` preprocessor in ``Autograde.autograde_preprocessors`` (see
assignment/nbgrader_config.py): it hands the submission to ``autograder.grade`` (student code
runs only in the sandbox) and writes each unit's result into the unit's grade cell as
outputs, which nbgrader's own ``SaveAutoGrades`` turns into gradebook scores:

* a stdout stream: one line per test, with the reason for lost points (the feedback);
* an ``execute_result`` holding the unit's score, nbgrader's partial-credit convention.

Nothing else of the notebook is executed. With ``course_dir`` set, KitGrader grades what the
batch grader grades for that student (the same file, by the same rule, see
autograder/batch.py) and uses the result the batch already stored, so `make autograde
JOBS=N` grades each submission once and nbgrader's scores are the kit's.

A file nbgrader cannot process would stop it for the whole class (invalid JSON, a renamed
notebook, a cell pasted twice with its grade_id, a broken ``schema_version``): nbgrader
aborts on some of these and fails the run on the others. So the batch writes, for each
student, a copy nbgrader can always process (``write_nbgrader_inputs``), and `make
autograde` points nbgrader at it (``--CourseDirectory.submitted_directory``):

* the cell that counts for each grade_id is the kit's (the FIRST code cell with it, see
  autograder/submission.py); a later duplicate loses its nbgrader metadata and is marked
  "not graded", so nbgrader's DeduplicateIds (which would keep the last) has nothing to do;
* every cell's nbgrader metadata is the assignment's own (from the source notebook), so no
  ``schema_version`` or other metadata a student changed can fail CheckCellMetadata;
  metadata of an unknown grade_id is dropped, and a deleted grade cell is put back;
* a file that cannot be read, or a missing notebook, becomes a stub notebook (grade cells
  only) with a note saying why; the student gets 0 for it, with that reason.

A NOT GRADED outcome (the grader failed for a reason that is not the student's) is written
into the grade cells as such, and ``KitRecordStatus`` then clears those cells' autograder
scores in the gradebook (nbgrader's "needs manual grading"); ``KitCsvExport`` writes
grades.csv with a ``status`` column and no score for them.
"""

import copy
import os
import shutil
import tempfile
from pathlib import Path

import nbformat
from traitlets import Bool, Unicode

from autograder import ASSIGNMENT, DATA_FILE, NOTEBOOK_NAME, SOURCE_NOTEBOOK, write_csv
from autograder.reports import not_graded_text, unit_feedback
from autograder.submission import (SubmissionError, cell_grade_id, read_notebook,
                                   select_solution_cells)

# The grader (batch, grade) is imported where it is used: it imports torch, which nbgrader's
# other commands (export, generate_feedback, generate_assignment) load this file without.
GRADE_CELL_SUFFIX = "_autograded"
NBGRADER_INPUT = "nbgrader_input"  # under the course's grader_results/
RESULTS_DIR = "grader_results"  # batch.RESULTS_DIR
NOT_GRADED = "not graded"  # grade.NOT_GRADED
KIT_RESOURCES = "captioning_autograder"

try:  # nbgrader is a dependency of the kit, but the grader itself does not need it
    from nbgrader.plugins import CsvExportPlugin
    from nbgrader.preprocessors import NbGraderPreprocessor
except ImportError:  # pragma: no cover
    NbGraderPreprocessor = CsvExportPlugin = object


class KitGrader(NbGraderPreprocessor):
    """Scores a submission with the sandboxed grader and fills in its grade cells."""

    device = Unicode("cpu", help="cpu, cuda or auto").tag(config=True)
    allow_unsandboxed = Bool(False, help="grade where bubblewrap cannot run").tag(config=True)
    data = Unicode(str(DATA_FILE), help="the COCO subset").tag(config=True)
    course_dir = Unicode("", help="the course directory: grade each student's submission in "
                                  "its submitted/ as the batch grader does, and use the result "
                                  "it stored in grader_results/; empty: grade the notebook "
                                  "nbgrader gives").tag(config=True)

    _coco = None
    _fixture = None
    _fingerprint = None

    def preprocess(self, nb, resources):
        from autograder import batch

        student = resources.get("nbgrader", {}).get("student", "")
        if self.course_dir:
            result = self._course_result(student)
        else:
            with tempfile.TemporaryDirectory(prefix="captioning-nbgrader-") as scratch:
                path = Path(scratch) / "submission.ipynb"
                nbformat.write(nb, path)
                result = self._grade(path)
        not_graded = batch.is_not_graded(result)
        self.log.info("%s: %s (sandbox: %s)", student, "NOT GRADED" if not_graded else
                      f"{result.score}/{result.max_score}", result.mode)
        resources[KIT_RESOURCES] = {"status": result.status if not_graded else "graded"}
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
            if cell.cell_type != "code" or not grade_id.endswith(GRADE_CELL_SUFFIX):
                continue
            text, score = unit_feedback(result, grade_id[: -len(GRADE_CELL_SUFFIX)])
            cell.outputs = [
                nbformat.v4.new_output("stream", name="stdout", text=text),
                nbformat.v4.new_output("execute_result", data={"text/plain": str(score)}, execution_count=None),
            ]
        notes = [not_graded_text(result).strip()] if not_graded else list(result.notes)
        if notes:  # shown first in the feedback
            nb.cells.insert(0, nbformat.v4.new_markdown_cell(
                "**Grader notes**\n\n" + "\n".join(f"* {n}" for n in notes)))
        return nb, resources

    def _course_result(self, student: str):
        from autograder import batch, grade

        course = Path(self.course_dir)
        sub = batch.locate_submission(course, student)
        if sub.notebook is None:
            return batch.nothing_to_grade(sub.note, self.device)
        if KitGrader._fingerprint is None:
            KitGrader._fingerprint = batch.grader_fingerprint(grade.grader_secret(), Path(self.data))
        key = batch.submission_key(sub.notebook, KitGrader._fingerprint)
        store = batch.ResultStore(course / batch.RESULTS_DIR)
        # What the batch found for this very submission, NOT GRADED included (the batch
        # tries those again on its next run; nbgrader shows the same outcome as the batch).
        result = store.get(student, key, not_graded_too=True)
        if result is None:
            result = self._grade(sub.notebook)
            store.put(student, key, result)
        return batch.with_note(result, sub.note)

    def _grade(self, path: Path):
        from autograder import batch, checks, grade

        if KitGrader._coco is None:  # once per nbgrader run, shared by every submission
            batch.check_points()
            KitGrader._coco = batch.load_data(Path(self.data))
            KitGrader._fixture = checks.CaptionerFixture(KitGrader._coco)
        return grade.grade(path, coco=KitGrader._coco, fixture=KitGrader._fixture,
                           device=self.device, allow_unsandboxed=self.allow_unsandboxed)


class KitRecordStatus(NbGraderPreprocessor):
    """After SaveAutoGrades: a NOT GRADED submission gets no autograder score (nbgrader then
    lists it as needing manual grading) instead of the 0 its grade cells show."""

    def preprocess(self, nb, resources):
        if resources.get(KIT_RESOURCES, {}).get("status") != NOT_GRADED:
            return nb, resources
        from nbgrader.api import Gradebook

        info = resources["nbgrader"]
        with Gradebook(info["db_url"]) as gradebook:
            for cell in nb.cells:
                nbgrader = cell.metadata.get("nbgrader", {})
                if nbgrader.get("grade"):
                    entry = gradebook.find_grade(nbgrader["grade_id"], info["notebook"],
                                                 info["assignment"], info["student"])
                    entry.auto_score = None
                    entry.needs_manual_grade = True
            gradebook.db.commit()
        return nb, resources


class KitCsvExport(CsvExportPlugin):
    """nbgrader's grades.csv (its columns and scores), plus a last column `status`:
    "graded", "no submission", or "not graded" (a score still missing: NOT GRADED by the
    kit, or waiting for a manual grade), whose raw_score and score are left empty rather
    than counted as 0. Written by the kit's one CSV writer (write_csv): nbgrader's own
    writes cells unquoted (a comma in a student id shifts the columns) and unneutralised
    (a student id, the folder's name, which the student often chooses, could run as a
    spreadsheet formula)."""

    FIELDS = ("assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email",
              "raw_score", "late_submission_penalty", "score", "max_score", "status")

    def export(self, gradebook) -> None:
        wanted_students = {str(s) for s in self.student}
        wanted_assignments = {str(a) for a in self.assignment}
        rows = [self._row(gradebook, assignment, student)
                for assignment in gradebook.assignments
                if not wanted_assignments or assignment.name in wanted_assignments
                for student in gradebook.students if not wanted_students or student.id in wanted_students]
        write_csv(self.to or "grades.csv", self.FIELDS, rows)

    @staticmethod
    def _row(gradebook, assignment, student) -> list:
        """One student's row, as nbgrader's CsvExportPlugin computes it, and the status."""
        from nbgrader.api import MissingEntry

        row = {"assignment": assignment.name, "duedate": assignment.duedate, "student_id": student.id,
               "last_name": student.last_name, "first_name": student.first_name, "email": student.email,
               "max_score": assignment.max_score}
        try:
            submission = gradebook.find_submission(assignment.name, student.id)
        except MissingEntry:
            row.update(timestamp="", raw_score=0.0, late_submission_penalty=0.0, score=0.0, status="no submission")
        else:
            penalty = submission.late_submission_penalty
            row.update(timestamp=submission.timestamp, raw_score=submission.score, late_submission_penalty=penalty,
                       score=max(0.0, submission.score - penalty), status="graded")
            if submission.needs_manual_grade:
                row.update(raw_score="", score="", status=NOT_GRADED)
        return ["" if row[field] is None else row[field] for field in KitCsvExport.FIELDS]


# ---------------------------------------------------------------------------------------
# What nbgrader reads: a copy of each submission it can always process
# ---------------------------------------------------------------------------------------


def source_notebook(course_dir: Path) -> nbformat.NotebookNode:
    """The assignment's nbgrader source notebook: the course's, else the kit's."""
    for path in (Path(course_dir) / "source" / ASSIGNMENT / NOTEBOOK_NAME,
                 SOURCE_NOTEBOOK):
        if path.is_file():
            return nbformat.read(path, as_version=4)
    raise FileNotFoundError(f"no nbgrader source notebook in {course_dir}/source/{ASSIGNMENT}/")


def _canonical(source: nbformat.NotebookNode) -> dict:
    """{grade_id: source cell} of every cell with nbgrader metadata."""
    return {c.metadata.nbgrader["grade_id"]: c for c in source.cells if "nbgrader" in c.metadata}


def stub_notebook(source: nbformat.NotebookNode, reason: str) -> nbformat.NotebookNode:
    """A notebook of the assignment's solution and grade cells only, saying why nothing of
    the submission is in it (never a line of the reference: solution cells hold a note)."""
    cells = [nbformat.v4.new_markdown_cell(f"**Nothing of this submission could be graded:** {reason}")]
    for cell in source.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            cells.append(nbformat.v4.new_code_cell(
                f"# Nothing to grade here: {reason}".replace("\n", " "),
                metadata={"nbgrader": copy.deepcopy(meta)}))
        elif meta.get("grade"):
            cells.append(nbformat.v4.new_code_cell(cell.source, metadata={"nbgrader": copy.deepcopy(meta)}))
    return nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(source.metadata))


def _restore_grade_cells(cells: list, canonical: dict, seen: set[str], position: dict[str, int]) -> None:
    """Inserts into cells each grade cell of canonical whose grade_id is not in seen, after its
    unit's cell (position: grade_id -> index in cells) or at the end; returns None."""
    # A grade cell the student deleted comes back, so that every unit's score has a cell to go in.
    for grade_id, cell in canonical.items():
        if cell.metadata.nbgrader.get("grade") and grade_id not in seen:
            unit = grade_id.removesuffix(GRADE_CELL_SUFFIX)
            at = position[unit] + 1 if unit in position else len(cells)
            cells.insert(at, nbformat.v4.new_code_cell(
                cell.source, metadata={"nbgrader": copy.deepcopy(cell.metadata.nbgrader)}))
            position = {g: p + (p >= at) for g, p in position.items()}


def normalise(notebook: nbformat.NotebookNode, source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The submission as nbgrader should see it: for each grade_id, only the cell the kit
    grades carries it, with the assignment's own metadata; every grade cell present."""
    from autograder import grade

    canonical = _canonical(source)
    chosen, _ = select_solution_cells(notebook, grade.UNITS)
    keep = set(chosen.values())
    seen, cells, position = set(), [], {}
    for index, cell in enumerate(notebook.cells):
        if not isinstance(cell.get("metadata"), dict):
            cell["metadata"] = {}
        if "nbgrader" not in cell.metadata:
            cells.append(cell)
            continue
        grade_id = cell_grade_id(cell)
        counted = grade_id in canonical and (
            index in keep if grade_id in grade.UNITS
            else grade_id not in seen and cell.get("cell_type") == canonical[grade_id].cell_type)
        if counted:
            cell.metadata["nbgrader"] = copy.deepcopy(canonical[grade_id].metadata.nbgrader)
            seen.add(grade_id)
            position[grade_id] = len(cells)
        else:
            del cell.metadata["nbgrader"]
            if grade_id in seen and cell.get("cell_type") == "code" and isinstance(cell.get("source"), str):
                cell["source"] = (f"# NOT GRADED: a cell above has the same grade_id ({grade_id}); "
                                  "the first one counts.\n" + cell["source"])
        cells.append(cell)
    _restore_grade_cells(cells, canonical, seen, position)
    notebook.cells = cells
    ids = [c.get("id") for c in cells]
    if notebook.get("nbformat_minor", 0) >= 5 and len(set(ids)) != len(ids):
        for index, cell in enumerate(cells):
            cell["id"] = f"cell-{index:04d}"
    nbformat.validate(notebook)
    return notebook


def nbgrader_copy(sub, source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    if sub.notebook is None:
        return stub_notebook(source, sub.note)
    try:
        notebook = nbformat.from_dict(read_notebook(sub.notebook))
    except SubmissionError as exc:
        return stub_notebook(source, str(exc))
    try:
        return normalise(notebook, source)
    except Exception as exc:  # a notebook valid enough for the grader, not for nbgrader
        return stub_notebook(source, f"{sub.notebook.name} has a structure nbgrader cannot "
                             f"process ({type(exc).__name__}); the grader's result stands")


def write_nbgrader_inputs(course_dir: Path, submissions) -> Path:
    """grader_results/nbgrader_input/<student>/rnn_captioning/rnn_captioning.ipynb (and the
    submission's timestamp.txt) for every student; replaces the previous set whole."""
    course_dir = Path(course_dir)
    target = course_dir / RESULTS_DIR / NBGRADER_INPUT
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{NBGRADER_INPUT}.", dir=target.parent))
    try:
        source = source_notebook(course_dir)
        for sub in submissions:
            folder = building / sub.student / ASSIGNMENT
            folder.mkdir(parents=True)
            nbformat.write(nbgrader_copy(sub, source), folder / NOTEBOOK_NAME)
            timestamp = course_dir / "submitted" / sub.student / ASSIGNMENT / "timestamp.txt"
            if timestamp.is_file() and not timestamp.is_symlink():
                shutil.copyfile(timestamp, folder / "timestamp.txt")
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    old = target.with_name(f".{NBGRADER_INPUT}.old.{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(building, target)
    shutil.rmtree(old, ignore_errors=True)
    return target
