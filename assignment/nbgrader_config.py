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
from nbconvert.preprocessors import ClearMetadataPreprocessor  # noqa: E402
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, IgnorePattern,  # noqa: E402
                                    LimitOutput, SaveAutoGrades)

from autograder.nbgrader_autograde import KitGrader  # noqa: E402

c.Autograde.autograde_preprocessors = [
    KitGrader, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
    AssignLatePenalties, CheckCellMetadata,
]
c.KitGrader.device = "cpu"  # "auto" uses a GPU when there is one
# Results of `python -m autograder batch` (make autograde JOBS=N), reused when unchanged.
c.KitGrader.results_dir = str(COURSE_DIR / "grader_results")
