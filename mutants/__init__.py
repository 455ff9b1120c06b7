"""Mutation analysis of the hidden tests (``make mutants``): which plausible bug would score 100?

operators.py makes the mutants of the reference; run.py grades them with the real grader and
classifies them; visible.py runs the notebook's visible checks on them; report.py writes the
report. equivalent.toml is the reviewed list of mutants that compute what the reference does.
"""

from pathlib import Path

# Where the report and the mutants' notebooks go: git-ignored, since every mutant holds the
# reference's code.
OUT_DIR = Path(__file__).resolve().parent / "out"
EQUIVALENT_FILE = Path(__file__).resolve().parent / "equivalent.toml"
