"""The grading pipeline: what runs on the instructor's side to score submissions."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_FILE = REPO_ROOT / "data" / "coco.pt"  # built by `make data`; every command's default --data
