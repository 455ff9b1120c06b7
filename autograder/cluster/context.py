"""The build context of the grader's container image (autograder/cluster/image/).

    python -m autograder.cluster.context OUT_DIR [--data data/coco.pt]

OUT_DIR gets what the Gradescope zip ships, less the secret: the grader and the reference
(batch.grader_files, the one list), the pinned requirements, the data and the encoder's
features (so that no grading in the image imports torchvision), and the Containerfile.
The secret never enters the image: pods and grading jobs get it from the environment.
"""

import argparse
import shutil
import sys
from pathlib import Path

from autograder import DATA_FILE, REPO_ROOT

IMAGE_DIR = Path(__file__).resolve().parent / "image"


def write_context(out: Path, data: Path) -> list[str]:
    """Copy the image's files into out (emptied first); the names written, relative to out."""
    from autograder import batch, checks

    if not data.is_file():
        raise FileNotFoundError(f"{data} is missing: run `make data` first")
    shutil.rmtree(out, ignore_errors=True)
    names = [*batch.grader_files(), "requirements.txt", "requirements.lock"]
    for name in names:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / name, out / name)
    (out / "data").mkdir(exist_ok=True)
    shutil.copyfile(data, out / "data" / "coco.pt")
    (out / "data" / checks.FEATURES_CACHE.name).write_bytes(checks.features_file(batch.load_data(data)))
    shutil.copyfile(IMAGE_DIR / "Containerfile", out / "Containerfile")
    return [*names, "data/coco.pt", f"data/{checks.FEATURES_CACHE.name}", "Containerfile"]


def main(argv=None) -> int:
    """The command: write the context (exit 2 when the data file is missing)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=DATA_FILE)
    args = parser.parse_args(argv)
    try:
        names = write_context(args.out, args.data)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(names)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
