"""What a worker group's sandbox is sent: its job (code, tests, limits) and hidden inputs.

A unit's job holds the provided code, stand-ins for the units served to it (never their
code), the student's cells it needs, its tests' names and case counts and what their cases
share, and the limits; the hidden inputs go beside it in the same .npz (wire.pack_job). No
job holds reference code, expected values or the secret.
"""

import ast

from autograder import forbidden, submission_sandbox, wire
from autograder.reference_service import ReferenceService, callable_names, served_definitions
from autograder.submission_sandbox import STUDENT_DEPENDENCIES, STUDENT_HELPERS, UNITS, Group
from solution import source as reference_source


def _preamble() -> str:
    """The reference module's imports and provided definitions (no graded code)."""
    imports, definitions = reference_source.split_definitions()
    return imports + "\n\n" + "\n\n\n".join(definitions[n] for n in reference_source.provided_names())


def names_used(code: str) -> set[str]:
    """Every name the code reads (it parses: cells that do not were excluded before)."""
    return {node.id for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name)}


def student_code_for(unit: str, cells: dict[str, str], runnable: set[str], served=()) -> list[str]:
    """The units whose student code runs with unit, in notebook order, unit last; never
    those served to it.

    A helper unit joins only when the unit's code calls it, so that a broken helper cell
    costs nothing to a unit that does not use it.
    """
    wanted = {unit, *STUDENT_DEPENDENCIES.get(unit, ())} - set(served)
    while True:  # a helper's own calls count too (rnn_forward's call of rnn_step_forward)
        used = set().union(*(names_used(cells[u]) for u in wanted))
        more = {h for h in STUDENT_HELPERS.get(unit, ())
                if h in runnable and h in used and h not in served} - wanted
        if not more:
            return [u for u in UNITS if u in wanted and u != unit] + [unit]
        wanted |= more


def unit_code(unit: str, served: tuple[str, ...], cells: dict[str, str], runnable: set[str],
              preamble: str) -> list[dict]:
    """The code a unit's process runs, in order: the provided code, stand-ins for the units
    served to it, then the student's cells it needs."""
    code = [{"name": "provided code", "source": preamble}]
    if served:
        code.append({"name": "served", "served": served_definitions(served)})
    return code + [{"name": u, "source": cells[u]} for u in student_code_for(unit, cells, runnable, served)]


def job_blob(group: Group, units, cells: dict[str, str], tests, device: str, runnable: set[str]) -> bytes:
    """Everything one worker group needs for units, some of its own (runnable: the units
    whose cells may run)."""
    description = {"device": device, "unit_seconds": submission_sandbox.UNIT_SECONDS,
                   "unit_cpu_seconds": submission_sandbox.UNIT_CPU_SECONDS,
                   "unit_wall_seconds": submission_sandbox.UNIT_WALL_SECONDS,
                   "cuda_memory_fraction": submission_sandbox.CUDA_MEMORY_FRACTION, "units": []}
    inputs, preamble = {}, _preamble()
    for unit in units:
        unit_tests = [t for t in tests if t.unit == unit]
        description["units"].append({
            "unit": unit, "code": unit_code(unit, group.served, cells, runnable, preamble),
            "tests": [{"test": t.name, "cases": len(t.cases), "shared": t.shared} for t in unit_tests],
            "no_autograd": unit in forbidden.HAND_WRITTEN_BACKWARD, "no_threads": unit in forbidden.THREADLESS_CELLS})
        inputs[unit] = {wire.case_key(t.name, index, name): value.numpy()
                        for t in unit_tests for index, case in enumerate(t.cases)
                        for name, value in case.inputs.items()}
    return wire.pack_job(description, inputs)


def service_for(group: Group) -> ReferenceService | None:
    """The reference service a group's sandbox calls, if it is served."""
    if not group.served:
        return None
    return ReferenceService(callable_names(served_definitions(group.served)), gradients=group.gradients)
