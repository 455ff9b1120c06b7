"""Shared fixtures. Tests run offline: encoders are unpretrained and seeded."""

import os
from pathlib import Path

import pytest
import torch

from autograder import DATA_FILE, REPO_ROOT
from autograder.graded_tests import strict_float_math

MIRROR = Path(os.environ.get("COCO_SOURCE", REPO_ROOT.parent / "shared" / "data" / "coco_mini"))
COCO_PT = DATA_FILE

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none on this machine")


def devices():
    """CPU always; CUDA too when there is one (the CUDA cases skip with a reason otherwise)."""
    return ["cpu", pytest.param("cuda", marks=CUDA)]


@pytest.fixture(autouse=True)
def _seed_and_strict_math():
    torch.manual_seed(0)
    strict_float_math()


@pytest.fixture(scope="session")
def coco():
    """The built data set; `make data` (run by `make setup` and `make test`) writes it."""
    if not COCO_PT.is_file():
        pytest.fail(f"{COCO_PT} is missing: run `make data` first")
    return torch.load(COCO_PT, weights_only=True)
