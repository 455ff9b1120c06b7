"""The grading pipeline: what runs on the instructor's side to score submissions."""

import contextlib
import csv
import os
import re
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


# A spreadsheet runs a cell that begins with one of these as a formula (tab and carriage
# return hide one behind white space); every CSV the kit writes goes through write_csv.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?")


def spreadsheet_cell(value):
    """value as a CSV cell that a spreadsheet shows as written and never runs: text that
    begins with a formula character gets a leading apostrophe; a number stays a number
    (-5 and "-5.0" too: a spreadsheet reads them as numbers; "-2+3" it would compute)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = "" if value is None else str(value)
    if text[:1] in FORMULA_STARTS and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def write_csv(path: Path, header, rows) -> None:
    """A CSV file, written whole (write_atomically), every cell of the header and the rows
    made safe for a spreadsheet (spreadsheet_cell): the kit's one CSV writer. (csv's own
    line ends, \r\n: a cell holding a lone \r is then quoted too, and read back whole.)"""
    with write_atomically(path, newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([spreadsheet_cell(cell) for cell in header])
        writer.writerows([spreadsheet_cell(cell) for cell in row] for row in rows)
