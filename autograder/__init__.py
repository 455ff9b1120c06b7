"""The grading pipeline: what runs on the instructor's side to score submissions."""

import contextlib
import os
import secrets
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_FILE = REPO_ROOT / "data" / "coco.pt"  # built by `make data`; every command's default --data
ASSIGNMENT = "rnn_captioning"  # nbgrader's name of the assignment (the Makefile's ASSIGNMENT too)
NOTEBOOK_NAME = f"{ASSIGNMENT}.ipynb"  # the notebook students hand in
COURSE_DIR = REPO_ROOT / "assignment"  # the nbgrader course directory
SOURCE_NOTEBOOK = COURSE_DIR / "source" / ASSIGNMENT / NOTEBOOK_NAME  # the instructor's (make notebook)
POINTS_FILE = REPO_ROOT / "autograder" / "points.toml"  # every graded test's points


@contextlib.contextmanager
def write_atomically(path: Path, mode: str = "w", **open_arguments):
    """A file to write that replaces path in one step once the block ends without an error
    (a reader sees the old file or the new, never half of one; a crash leaves no partial
    file), and is removed otherwise. Created as open() would create path (umask applies)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(handle, mode, **open_arguments) as f:
            yield f
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
