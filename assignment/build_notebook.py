"""Build the nbgrader source notebook from its text source and the reference solution.

    python -m assignment.build_notebook            # write the notebook
    python -m assignment.build_notebook --check    # exit 1 if the committed notebook is stale
    python -m assignment.build_notebook --fill-expected
        # replace every `expected_NAME = EXPECTED` line of the text source with the value the
        # reference computes in check NAME (after changing a check's inputs)

Inputs: assignment/rnn_captioning_notebook.py (the narrative and the checks, see its header),
solution/captioning.py (the code of every unit and provided cell) and autograder/points.toml
(the points of each unit's grade cell). Output: the nbgrader source notebook, which
`make release` turns into the student version.
"""

import argparse
import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import nbformat
import torch

from autograder import ASSIGNMENT, COURSE_DIR, POINTS_FILE, REPO_ROOT, SOURCE_NOTEBOOK
from solution import source as reference

TEXT_SOURCE = COURSE_DIR / f"{ASSIGNMENT}_notebook.py"
NOTEBOOK = SOURCE_NOTEBOOK

_CELL_MARKER = re.compile(r"^# %%(?: \[(?P<kind>\w+)\](?P<args>.*))?$")
_PLACEHOLDER = re.compile(r"^(?P<indent>\s*)expected_(?P<name>\w+) = EXPECTED$", re.MULTILINE)
_TARGET = re.compile(r"OVERFIT_TARGETS\[(?P<cell_type>\w+)\]")


def shipped_helpers():
    """captioning_helpers.py as it ships beside the notebook: where the overfitting recipe
    and its targets are declared, which the notebook's text states."""
    spec = importlib.util.spec_from_file_location("captioning_helpers", NOTEBOOK.parent / "captioning_helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_targets(markdown: str) -> str:
    """markdown with each OVERFIT_TARGETS[cell type] written as that target's value."""
    targets = shipped_helpers().OVERFIT_TARGETS
    return _TARGET.sub(lambda m: str(targets[m.group("cell_type")]), markdown)


def source_blocks(text: str) -> list[tuple[str, list[str], str]]:
    """The text source as (kind, args, block) in order, block being the cell's text with its
    marker line, so that joining the blocks gives the text back. The first block, kind
    "header", is what precedes the first marker; then kind is "code", "markdown",
    "imports", "provided" or "unit"."""
    blocks = [("header", [], [])]
    for line in text.splitlines(keepends=True):
        match = _CELL_MARKER.match(line.rstrip("\r\n"))
        if match:
            blocks.append((match.group("kind") or "code", (match.group("args") or "").split(), []))
        blocks[-1][2].append(line)
    return [(kind, args, "".join(lines)) for kind, args, lines in blocks]


def parse_cells(text: str) -> list[tuple[str, list[str], str]]:
    """The text source's cells as (kind, args, body), the header dropped; a markdown body
    loses its comment marks."""
    result = []
    for kind, args, block in source_blocks(text)[1:]:
        body = "\n".join(block.splitlines()[1:]).strip("\n")
        if kind == "markdown":
            body = "\n".join(re.sub(r"^# ?", "", line) for line in body.splitlines())
        result.append((kind, args, body))
    return result


POINTS_TOTAL = 100  # what the grader requires (autograder/checks.py, load_points)


class PointsError(ValueError):
    """points.toml cannot be used: the message says why."""


def unit_points(path: Path | None = None) -> dict[str, int]:
    """Total points of each graded unit, from the grader's points file, which must total
    100 (the grader refuses anything else, so the notebook must not promise it)."""
    path = POINTS_FILE if path is None else path
    try:
        with open(path, "rb") as f:
            points = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PointsError(f"{path} cannot be read: {exc}") from None
    bad = [f"{unit}.{test}" for unit, tests in points.items() if isinstance(tests, dict)
           for test, value in tests.items() if type(value) is not int or value < 0]
    if bad or not all(isinstance(tests, dict) for tests in points.values()):
        raise PointsError(f"{path}: every test's points must be a whole number >= 0 "
                          f"({', '.join(bad) or 'a unit is not a table'})")
    total = sum(sum(tests.values()) for tests in points.values())
    if total != POINTS_TOTAL:
        raise PointsError(f"{path} totals {total} points, not {POINTS_TOTAL}: the grader "
                          f"refuses it. Change the points so that they add up to {POINTS_TOTAL}.")
    return {unit: sum(tests.values()) for unit, tests in points.items()}


def _tests_of(unit: str) -> str:
    """The unit's tests and their points, as a grade cell lists them: "forward (4), ..."."""
    with open(POINTS_FILE, "rb") as f:  # already checked by unit_points
        tests = tomllib.load(f)[unit]
    return ", ".join(f"{test.replace('_', ' ')} ({points})" for test, points in tests.items())


def _nbgrader(grade_id: str, *, solution=False, grade=False, locked=False, points=None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
            "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def build_notebook(text: str | None = None) -> nbformat.NotebookNode:
    """The nbgrader source notebook: narrative and checks from the text source, code of
    units and provided cells from the reference, one grade cell after each unit."""
    text = TEXT_SOURCE.read_text() if text is None else text
    imports, definitions = reference.split_definitions()
    units = reference.graded_units()
    points = unit_points()
    if set(points) != set(units):
        raise ValueError(f"{POINTS_FILE} and GRADED_UNITS name different units")
    cells = []
    for kind, args, body in parse_cells(text):
        if "EXPECTED" in body and kind == "code":
            raise ValueError("the text source still has EXPECTED placeholders: run --fill-expected")
        if kind == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(with_targets(body)))
        elif kind == "code":
            cells.append(nbformat.v4.new_code_cell(body.replace("UNIT_POINTS", repr(points))))
        elif kind == "imports":
            cells.append(nbformat.v4.new_code_cell(f"{imports}\n{body}"))
        elif kind == "provided":
            code = "\n\n\n".join(definitions[name] for name in args)
            cells.append(nbformat.v4.new_code_cell(
                code, metadata=_nbgrader(f"provided_{args[0]}", locked=True)))
        elif kind == "unit":
            (unit,) = args
            cells.append(nbformat.v4.new_code_cell(
                reference.unit_source(unit), metadata=_nbgrader(unit, solution=True)))
            cells.append(nbformat.v4.new_code_cell(
                f"# Autograded: {unit} earns up to {points[unit]} points from the course's grader, which\n"
                f"# runs its tests on hidden inputs: {_tests_of(unit)}.\n"
                "# This cell does nothing; leave it as it is.",
                metadata=_nbgrader(f"{unit}_autograded", grade=True, locked=True, points=points[unit])))
        else:
            raise ValueError(f"unknown cell kind [{kind}]")
    missing = [u for u in units if not any(c.metadata.get("nbgrader", {}).get("grade_id") == u for c in cells)]
    if missing:
        raise ValueError(f"the text source has no [unit] cell for {missing}")
    # Stable ids, so that rebuilding an unchanged source gives an identical file.
    for index, cell in enumerate(cells):
        cell.id = f"cell-{index:03d}"
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return notebook


def notebook_text(notebook: nbformat.NotebookNode) -> str:
    return nbformat.writes(notebook) + "\n"


# ---------------------------------------------------------------------------------------
# --fill-expected: run the checks with the reference and write their expected values
# ---------------------------------------------------------------------------------------


def tensor_literal(value: torch.Tensor, indent: str) -> str:
    """Python source of a tensor, float64 values to 10 significant digits."""
    value = value.detach().cpu()
    floating = value.is_floating_point()
    suffix = ", dtype=torch.float64)" if floating else ")"

    def fmt(x):
        return format(x, ".10g") if floating else str(x)

    def nested(v, depth):
        if v.dim() == 0:
            return fmt(v.item())
        if v.dim() == 1:
            return "[" + ", ".join(fmt(x) for x in v.tolist()) + "]"
        pad = indent + "    " * (depth + 1)
        return "[\n" + ",\n".join(pad + nested(row, depth + 1) for row in v) + ",\n" + pad[:-4] + "]"

    return f"torch.tensor({nested(value, 0)}{suffix}"


def fill_expected(text: str) -> str:
    """text with every `expected_NAME = EXPECTED` line replaced by the reference's value."""
    import matplotlib

    matplotlib.use("Agg")
    sys.path.insert(0, str(NOTEBOOK.parent))
    import captioning_helpers as helpers

    imports, definitions = reference.split_definitions()
    namespace = {"EXPECTED": None}
    exec(imports, namespace)
    recorded: dict[str, torch.Tensor] = {}

    def record(name, actual, expected, *args, **kwargs):
        recorded[name] = actual

    helpers.check_close = helpers.check_equal = record
    out_cells = []
    for kind, args, block in source_blocks(text):
        body = block.split("\n", 1)[1] if kind != "header" and "\n" in block else ""
        if kind == "imports":
            exec(imports + "\n" + "\n".join(line for line in body.splitlines() if not line.startswith("%")), namespace)
            namespace.update(check_close=record, check_equal=record)
        elif kind == "provided":
            exec("\n\n".join(definitions[name] for name in args), namespace)
        elif kind == "unit":
            exec(reference.unit_source(args[0]), namespace)
        elif kind == "code" and "visible_check" in body:
            recorded.clear()
            exec(body, namespace)

            def substitute(m):
                name = m.group("name")
                if name not in recorded:
                    raise ValueError(f"no check named {name!r} in the cell of expected_{name}")
                return f"{m.group('indent')}expected_{name} = {tensor_literal(recorded[name], m.group('indent'))}"

            block = _PLACEHOLDER.sub(substitute, block)
        out_cells.append(block)
    return "".join(out_cells)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail if the committed notebook is stale")
    mode.add_argument("--fill-expected", action="store_true", help="compute EXPECTED placeholders")
    args = parser.parse_args(argv)
    if args.fill_expected:
        TEXT_SOURCE.write_text(fill_expected(TEXT_SOURCE.read_text()))
        print(f"filled expected values in {TEXT_SOURCE.relative_to(REPO_ROOT)}")
        return 0
    try:
        built = notebook_text(build_notebook())
    except PointsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if not NOTEBOOK.is_file() or NOTEBOOK.read_text() != built:
            print(f"{NOTEBOOK.relative_to(REPO_ROOT)} is out of date with its sources: run `make notebook`",
                  file=sys.stderr)
            return 1
        print(f"{NOTEBOOK.relative_to(REPO_ROOT)} is up to date")
        return 0
    NOTEBOOK.write_text(built)
    print(f"wrote {NOTEBOOK.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
