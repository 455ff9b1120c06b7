# nbgrader configuration of the course directory (this folder). Run nbgrader from here, or
# through the Makefile (`make release`, `make autograde`, `make feedback`).
import sys
from pathlib import Path

c = get_config()  # noqa: F821 (provided by nbgrader)

COURSE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(COURSE_DIR.parent))  # the repository: the autograder package

c.CourseDirectory.course_id = "rnn_captioning"
c.CourseDirectory.root = str(COURSE_DIR)
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback"]
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Autograding: the kit's sandboxed grader replaces nbgrader's in-kernel execution (see
# autograder/nbgrader_autograde.py); the rest of nbgrader's pipeline is unchanged.
# `make autograde` runs nbgrader on the copies the batch grader writes to
# grader_results/nbgrader_input/ (--CourseDirectory.submitted_directory), which nbgrader can
# always process whatever a student submitted.
from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, GetGrades,  # noqa: E402
                                    IgnorePattern, LimitOutput, SaveAutoGrades)

try:
    from autograder import ASSIGNMENT, DATA_FILE, feedback
    from autograder.nbgrader_autograde import KitCsvExport, KitGrader, KitRecordStatus
except ImportError as exc:
    # nbgrader ignores a configuration file that raises, and its stock autograde then runs
    # every student notebook in a kernel, unsandboxed: refuse to autograde instead.
    from nbgrader.preprocessors import NbGraderPreprocessor

    _WHY = (f"the kit's grader cannot be imported here ({exc}): autograde from the repository "
            "(make autograde, or PYTHONPATH=<the repository>); nbgrader's own autograde would "
            "run student code unsandboxed, so nothing was graded")

    class KitGrader(NbGraderPreprocessor):
        def preprocess(self, nb, resources):
            raise RuntimeError(_WHY)

    c.Autograde.autograde_preprocessors = [KitGrader]
else:
    c.Autograde.autograde_preprocessors = [
        KitGrader, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
        KitRecordStatus, AssignLatePenalties, CheckCellMetadata,
    ]
    c.KitGrader.device = "cpu"  # "auto" uses a GPU when there is one
    # Grade each student's own submission as `python -m autograder batch` does (make
    # autograde JOBS=N), reusing the results it stored in grader_results/.
    c.KitGrader.course_dir = str(COURSE_DIR)
    # The grader reads the data from data/coco.pt (KitGrader.data). Left to itself, autograde
    # copies every file of source/ beside each student's autograded notebook, the course's
    # coco.pt too (9 MB a student), and generate_feedback then copies each autograded/ folder
    # into feedback/. (Not CourseDirectory.ignore: the release and nbgrader's exchange use it
    # too, and students need the file.)
    c.Autograde.exclude_overwriting = {ASSIGNMENT: [DATA_FILE.name]}
    # grades.csv with a `status` column; a NOT GRADED submission has no score there.
    c.ExportApp.plugin_class = KitCsvExport

    # Feedback (make feedback): the kit's page, see autograder/feedback.py. Setting the
    # template here also keeps nbgrader from putting its own in (it does where none is set).
    c.GenerateFeedback.exporter_class = feedback.FeedbackExporter
    c.GenerateFeedback.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, feedback.KitFeedback]
    c.HTMLExporter.template_name = feedback.TEMPLATE_NAME
    c.HTMLExporter.template_file = feedback.TEMPLATE_FILE
    c.HTMLExporter.extra_template_basedirs = [str(feedback.TEMPLATE_BASEDIR), feedback.nbgrader_template_basedir()]
