"""Reading a submitted notebook: only the code of its solution cells counts.

Outputs, metadata other than the grade_id, and every other cell are ignored: the provided
code the grader runs comes from the reference source, never from the submission.

One rule decides which cell counts, everywhere (the grader, the batch's cache key, and the
copy nbgrader sees, see autograder/nbgrader_autograde.py): the FIRST code cell, in the
notebook's order, whose nbgrader grade_id is the unit's name. A later cell with the same
grade_id (Jupyter's copy-paste keeps the metadata) is not graded, and a note says so.

Which file is the submission is decided here too (``find_notebook``), for Gradescope, the
command line and the batch alike.
"""

import json
import os
from pathlib import Path

from autograder import NOTEBOOK_NAME, SOURCE_NOTEBOOK

MAX_NOTEBOOK_BYTES = 20 << 20  # a real submission is under 1 MB without outputs
MAX_CELL_CHARS = 200_000


class SubmissionError(ValueError):
    """The file cannot be read as a notebook; the message says why, for the student."""


def read_notebook(path: Path) -> dict:
    """The notebook at path (its JSON), or SubmissionError saying why it cannot be read.

    Version-4 notebooks (every Jupyter since 2015) are read as plain JSON: nbformat's import
    alone costs 2.5 s of the grader's start (jsonschema's format checkers); older versions
    are converted by nbformat, as nbgrader would.
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
        text = path.read_bytes().decode("utf-8-sig")
        notebook = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SubmissionError(f"{path.name} is not a Jupyter notebook ({type(exc).__name__})") from None
    except OSError as exc:
        raise SubmissionError(f"cannot read {path.name}: {exc.strerror}") from None
    if not isinstance(notebook, dict):
        raise SubmissionError(f"{path.name} is not a readable notebook: it is not a JSON object")
    if notebook.get("nbformat") != 4:
        notebook = _converted(path, text)
    if not isinstance(notebook.get("cells", []), list):
        raise SubmissionError(f"{path.name} is not a readable notebook: it has no list of cells")
    for number, cell in enumerate(notebook.get("cells", []), 1):
        source = cell.get("source") if isinstance(cell, dict) else None
        if isinstance(source, list):  # lines, joined as nbformat joins them
            if not all(isinstance(line, str) for line in source):
                raise SubmissionError(f"{path.name} is not a readable notebook: the source of "
                                      f"cell {number} is a list of things other than text")
            cell["source"] = "".join(source)
    return notebook


def _converted(path: Path, text: str) -> dict:
    """An older (or unversioned) notebook, as nbformat converts it to version 4."""
    import nbformat

    try:
        return nbformat.reads(text, as_version=4)
    except Exception as exc:  # nbformat's own validation and version errors
        raise SubmissionError(f"{path.name} is not a readable notebook: {str(exc)[:200]}") from None


def cell_grade_id(cell) -> str | None:
    """The nbgrader grade_id of a cell (any cell type), or None."""
    if not isinstance(cell, dict):
        return None
    metadata = cell.get("metadata", {})
    nbgrader = metadata.get("nbgrader", {}) if isinstance(metadata, dict) else {}
    grade_id = nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None
    return grade_id if isinstance(grade_id, str) else None


def select_solution_cells(notebook, units) -> tuple[dict[str, int], list[str]]:
    """{unit: index of the cell that counts for it}, and notes. The rule: the first code
    cell with the unit's grade_id, in the notebook's order."""
    chosen, notes = {}, []
    for index, cell in enumerate(notebook.get("cells", [])):
        grade_id = cell_grade_id(cell)
        if grade_id not in units or cell.get("cell_type") != "code":
            continue
        if grade_id in chosen:
            notes.append(f"{grade_id}: more than one cell has this grade_id; the first one "
                         "counts, the others are not graded")
            continue
        chosen[grade_id] = index
    return chosen, notes


def cell_source(cell) -> str | None:
    source = cell.get("source", "")
    if isinstance(source, list):
        source = "".join(str(line) for line in source)
    return source if isinstance(source, str) else None


def read_solution_cells(path: Path, units) -> tuple[dict[str, str], list[str]]:
    """The source of each unit's solution cell (matched by nbgrader grade_id), and notes.

    A unit with no cell is absent from the result; a note says so. When a grade_id appears
    more than once, the first cell counts (the notebook's order), with a note.
    """
    notebook = read_notebook(path)
    chosen, notes = select_solution_cells(notebook, units)
    cells = {}
    for unit, index in chosen.items():
        source = cell_source(notebook["cells"][index])
        if source is None:
            notes.append(f"{unit}: the cell's source is not text")
        elif len(source) > MAX_CELL_CHARS:
            notes.append(f"{unit}: the cell is longer than {MAX_CELL_CHARS} characters")
        else:
            cells[unit] = source
    for unit in units:
        if unit not in chosen:
            notes.append(f"{unit}: no solution cell with grade_id {unit!r} (was it deleted or "
                         "copied into a new cell?)")
    return cells, notes


def _listing(paths, root: Path, limit: int = 5) -> str:
    names = [p.relative_to(root).as_posix() for p in paths[:limit]]
    return ", ".join(names) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def find_notebook(folder: Path, name: str = NOTEBOOK_NAME) -> tuple[Path | None, str]:
    """The notebook to grade in a submission folder, and a sentence saying what was chosen
    or, when there is none (None), what was found.

    The rule: a file named `name` anywhere under folder (the shallowest, then by path), else
    the only .ipynb file; never one in a hidden folder (.ipynb_checkpoints, .git, ...) or a
    hidden file, and never a symbolic link.
    """
    folder = Path(folder)
    notebooks, hidden = [], []
    for directory, subdirs, files in os.walk(folder, followlinks=False):
        here = Path(directory)
        for sub in list(subdirs):
            if sub.startswith(".") or sub == "__MACOSX":
                subdirs.remove(sub)
                hidden += [p for p in sorted((here / sub).rglob("*.ipynb"))]
        subdirs.sort()
        for file in sorted(files):
            path = here / file
            if not file.endswith(".ipynb"):
                continue
            if file.startswith(".") or path.is_symlink() or not path.is_file():
                hidden.append(path)
            else:
                notebooks.append(path)
    exact = sorted((p for p in notebooks if p.name == name),
                   key=lambda p: (len(p.relative_to(folder).parts), p.as_posix()))
    if exact:
        chosen = exact[0]
        others = [p for p in notebooks if p != chosen]
        note = f"graded {chosen.relative_to(folder).as_posix()}"
        return chosen, note + (f" (not graded: {_listing(others, folder)})" if others else "")
    if len(notebooks) == 1:
        return notebooks[0], (f"graded {notebooks[0].relative_to(folder).as_posix()} (the only "
                              f"notebook in the submission; it should be named {name})")
    if notebooks:
        return None, (f"no {name} in the submission, and {len(notebooks)} other notebooks "
                      f"({_listing(notebooks, folder)}): submit one notebook named {name}")
    skipped = f" (only {_listing(hidden, folder)}, which is not graded)" if hidden else ""
    return None, f"no notebook ({name}) in the submission{skipped}"


def write_submission(path: Path, cells: dict[str, str] | None = None, notebook: Path = SOURCE_NOTEBOOK) -> Path:
    """A copy of notebook (the instructor's by default) with the given units' solution cells
    replaced, written to path: a submission, for tests, benchmarks and trials."""
    import nbformat  # slow to import (jsonschema): only this helper needs it

    nb = nbformat.read(notebook, as_version=4)
    cells = dict(cells or {})
    for cell in nb.cells:
        unit = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution") and unit in cells:
            cell.source = cells.pop(unit)
    if cells:
        raise ValueError(f"no solution cell for {sorted(cells)} in {notebook}")
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path
