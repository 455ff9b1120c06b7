"""Reading a submitted notebook: only the code of its solution cells counts.

Outputs, metadata other than the grade_id, and every other cell are ignored: the provided
code the grader runs comes from the reference source, never from the submission.
"""

import json
from pathlib import Path

import nbformat

MAX_NOTEBOOK_BYTES = 20 << 20  # a real submission is under 1 MB without outputs
MAX_CELL_CHARS = 200_000


class SubmissionError(ValueError):
    """The file cannot be read as a notebook; the message says why, for the student."""


def read_solution_cells(path: Path, units) -> tuple[dict[str, str], list[str]]:
    """The source of each unit's solution cell (matched by nbgrader grade_id), and notes.

    A unit with no cell is absent from the result; a note says so. When a grade_id appears
    more than once, the first cell counts (the notebook's order), with a note.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SubmissionError(f"cannot read {path.name}: {exc.strerror}") from None
    if size > MAX_NOTEBOOK_BYTES:
        raise SubmissionError(f"{path.name} is {size / 2**20:.0f} MB; the limit is "
                              f"{MAX_NOTEBOOK_BYTES >> 20} MB (clear the outputs and submit again)")
    try:
        # Some editors write a byte-order mark; utf-8-sig drops it.
        notebook = nbformat.reads(path.read_bytes().decode("utf-8-sig"), as_version=4)
    except (UnicodeDecodeError, json.JSONDecodeError, nbformat.reader.NotJSONError) as exc:
        raise SubmissionError(f"{path.name} is not a Jupyter notebook ({type(exc).__name__})") from None
    except Exception as exc:  # nbformat's own validation and version errors
        raise SubmissionError(f"{path.name} is not a readable notebook: {str(exc)[:200]}") from None

    cells, notes = {}, []
    for cell in notebook.get("cells", []):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        metadata = cell.get("metadata", {})
        nbgrader = metadata.get("nbgrader", {}) if isinstance(metadata, dict) else {}
        grade_id = nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None
        if grade_id not in units:
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(str(line) for line in source)
        if not isinstance(source, str):
            continue
        if grade_id in cells:
            notes.append(f"{grade_id}: more than one cell has this grade_id; the first counts")
            continue
        if len(source) > MAX_CELL_CHARS:
            notes.append(f"{grade_id}: the cell is longer than {MAX_CELL_CHARS} characters")
            continue
        cells[grade_id] = source
    for unit in units:
        if unit not in cells:
            notes.append(f"{unit}: no solution cell with grade_id {unit!r} (was it deleted or "
                         "copied into a new cell?)")
    return cells, notes
