"""Build the autograder zip that Gradescope expects.

    python -m autograder.gradescope --out dist/gradescope_autograder.zip [--sandbox bwrap|unsandboxed]

The zip holds, at its root, setup.sh and run_autograder (from autograder/gradescope_template/), the
grader, the hidden reference, points, the instructor's secret (so that Gradescope gives the
same scores as local grading), the pinned requirements and data/coco.pt. Gradescope unpacks
it into /autograder/source; run_autograder reads /autograder/submission/ and writes
/autograder/results/results.json.

Gradescope's containers may not allow the user namespaces bubblewrap needs. Then grading
refuses, as it does everywhere, unless the zip is built with --sandbox unsandboxed (the
results then say so): an explicit choice for the instructor, documented in the README.
"""

import argparse
import sys
import zipfile
from pathlib import Path

from autograder import DATA_FILE, REPO_ROOT, batch, checks, grade, write_atomically

TEMPLATES = Path(__file__).resolve().parent / "gradescope_template"
# The grader as the batch's cache key sees it (every *.py and *.toml of autograder/ and
# solution/: one list, batch.grader_files), and the pinned requirements.
SOURCE_FILES = batch.grader_files() + ["requirements.txt", "requirements.lock"]
# A fixed timestamp: the same sources give the same zip.
_EPOCH = (2020, 1, 1, 0, 0, 0)


def _add(archive: zipfile.ZipFile, name: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o755 if executable else 0o644) << 16
    archive.writestr(info, data)


def build_zip(out: Path, data: Path, sandbox_mode: str = "bwrap") -> Path:
    if not data.is_file():
        raise FileNotFoundError(f"{data} is missing: run `make data` first")
    run_autograder = (TEMPLATES / "run_autograder").read_text()
    if sandbox_mode == "unsandboxed":
        run_autograder = run_autograder.replace("SANDBOX_ARGS=()", "SANDBOX_ARGS=(--allow-unsandboxed)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with write_atomically(out, "wb") as f, zipfile.ZipFile(f, "w") as archive:
        _add(archive, "setup.sh", (TEMPLATES / "setup.sh").read_bytes(), executable=True)
        _add(archive, "run_autograder", run_autograder.encode(), executable=True)
        for name in SOURCE_FILES:
            _add(archive, name, (REPO_ROOT / name).read_bytes())
        _add(archive, "autograder/.grader_secret", grade.grader_secret())
        _add(archive, "data/coco.pt", data.read_bytes())
        # The encoder's features, so that no grading there imports torchvision (3 s each).
        _add(archive, "data/" + checks.FEATURES_CACHE.name, checks.features_file(batch.load_data(data)))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "dist" / "gradescope_autograder.zip")
    parser.add_argument("--data", type=Path, default=DATA_FILE)
    parser.add_argument("--sandbox", choices=["bwrap", "unsandboxed"], default="bwrap")
    args = parser.parse_args(argv)
    try:
        path = build_zip(args.out, args.data, args.sandbox)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB, sandbox: {args.sandbox}); "
          "upload it as the autograder of a Gradescope programming assignment")
    return 0


if __name__ == "__main__":
    sys.exit(main())
