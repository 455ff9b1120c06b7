"""The reference solution read as text: its graded units, its provided code, its stubs.

``captioning.py`` is the single source of truth. The notebook builder takes each unit's
code from here (with the solution markers nbgrader understands), and the grader assembles
the code a worker runs from here, so both always agree with the reference.
"""

import ast
import functools
import re
from pathlib import Path

SOLUTION_FILE = Path(__file__).with_name("captioning.py")
BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
# What nbgrader's ClearSolutions writes in place of a solution region.
STUB = "raise NotImplementedError()"


def read_source() -> str:
    return SOLUTION_FILE.read_text()


def graded_units(source: str | None = None) -> dict[str, tuple[str, ...]]:
    """GRADED_UNITS of the source, read without importing it: unit -> definition names."""
    return dict(_graded_units(read_source() if source is None else source))


# Parsing the reference is most of what assembling a job costs: each parse is kept, keyed
# by the source text itself, so that an edited reference is parsed again.
@functools.lru_cache(maxsize=4)
def _graded_units(source: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "GRADED_UNITS" for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value).items())
    raise ValueError(f"{SOLUTION_FILE} defines no GRADED_UNITS")


def split_definitions(source: str | None = None) -> tuple[str, dict[str, str]]:
    """Split the module into its import block and its top-level definitions.

    Returns (imports, definitions): imports is the text of the module's import statements;
    definitions maps each top-level function, class or assigned name to its source text
    (decorators included), in file order.
    """
    imports, definitions = _split(read_source() if source is None else source)
    return imports, dict(definitions)  # a copy: the cached one stays as parsed


@functools.lru_cache(maxsize=4)
def _split(source: str) -> tuple[str, dict[str, str]]:
    lines = source.splitlines()
    imports, definitions = [], {}
    for node in ast.parse(source).body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        text = "\n".join(lines[start - 1 : node.end_lineno])
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(text)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            definitions[node.name] = text
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            definitions[node.targets[0].id] = text
    return "\n".join(imports), definitions


def unit_source(unit: str, source: str | None = None) -> str:
    """The reference code of one graded unit, solution markers included."""
    _, definitions = split_definitions(source)
    return "\n\n\n".join(definitions[name] for name in graded_units(source)[unit])


def graded_methods(class_name: str, source: str | None = None) -> list[str]:
    """The methods of a graded class that hold solution lines (a student writes them)."""
    return list(_graded_methods(class_name, read_source() if source is None else source))


@functools.lru_cache(maxsize=32)
def _graded_methods(class_name: str, source: str) -> tuple[str, ...]:
    lines = source.splitlines()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return tuple(f.name for f in node.body if isinstance(f, ast.FunctionDef)
                         and BEGIN_SOLUTION in "\n".join(lines[f.lineno - 1:f.end_lineno]))
    raise KeyError(class_name)


def provided_names(source: str | None = None) -> list[str]:
    """Top-level definitions that belong to no unit (handed out as they are), in file order."""
    _, definitions = split_definitions(source)
    in_units = {name for names in graded_units(source).values() for name in names}
    return [name for name in definitions if name not in in_units and name != "GRADED_UNITS"]


# A solution region, markers included; its first line's indentation is group "indent".
SOLUTION_REGION = re.compile(
    rf"^(?P<indent>[ \t]*){re.escape(BEGIN_SOLUTION)}[^\n]*\n.*?^[ \t]*{re.escape(END_SOLUTION)}[^\n]*$",
    re.MULTILINE | re.DOTALL,
)


def solution_lines(text: str) -> list[str]:
    """The stripped, non-blank lines inside the solution regions of text."""
    lines = []
    for match in SOLUTION_REGION.finditer(text):
        body = match.group(0).splitlines()[1:-1]
        lines += [line.strip() for line in body if line.strip()]
    return lines


def strip_solutions(text: str) -> str:
    """text with every solution region replaced by a stub, as nbgrader's release does."""
    return SOLUTION_REGION.sub(lambda m: f"{m.group('indent')}{STUB}", text)
