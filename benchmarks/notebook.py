"""The notebook's training and the whole notebook, quiet and beside CPU-bound processes.

    python -m benchmarks.notebook [--parts threads,notebook] [--runs 3] [--hogs 4]
                                  [--epochs 60] [--cell lstm] [--source DIR]

threads: captioning_helpers.train_captioner on the notebook's slice (--cell, --epochs), in
a fresh process per run with torch at 1 thread and at 2 threads, the two in alternation,
--runs times each; first with nothing else started, then beside --hogs `while True: pass`
processes. notebook: the notebook of --source (default: the instructor's) executed top to
bottom in a kernel (nbclient, CPU, offline encoder), --runs times quiet, then --runs times
beside the spinners. Prints medians, every run and the load average; timings, not tests.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autograder import NOTEBOOK_NAME, REPO_ROOT, SOURCE_NOTEBOOK

HOG = "while True: pass"
ENV = {**os.environ, "CAPTIONING_PRETRAINED": "0", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO_ROOT),
       "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
TRAIN = """
import sys, time, torch
sys.path.insert(0, {helpers_dir!r})
import captioning_helpers as helpers
from solution.captioning import CaptioningRNN
torch.set_num_threads({threads})
data = helpers.load_coco({data!r})
images, captions = helpers.overfit_slice(data)
torch.manual_seed(0)
model = CaptioningRNN(data["vocab"]["token_to_idx"], cell_type={cell!r}, ignore_index=0,
                      image_encoder_pretrained=False)
start = time.perf_counter()
helpers.train_captioner(model, images, captions, epochs={epochs}, batch_size=25, lr=3e-3,
                        device=torch.device("cpu"))
print("SECONDS", time.perf_counter() - start)
"""


def train_seconds(threads: int, cell: str, epochs: int) -> float:
    code = TRAIN.format(helpers_dir=str(SOURCE_NOTEBOOK.parent), threads=threads, cell=cell, epochs=epochs,
                        data=str(REPO_ROOT / "data" / "coco.pt"))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=ENV).stdout
    return float(out.split("SECONDS")[-1])


def notebook_seconds(source: Path, root: Path) -> float:
    folder = Path(tempfile.mkdtemp(dir=root))
    for name in (NOTEBOOK_NAME, "captioning_helpers.py"):
        shutil.copy(source / name, folder / name)
    os.symlink(REPO_ROOT / "data" / "coco.pt", folder / "coco.pt")
    run = ("import nbformat; from nbclient import NotebookClient; "
           f"nb = nbformat.read('{NOTEBOOK_NAME}', 4); "
           "NotebookClient(nb, timeout=1800, kernel_name='python3').execute()")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", run], check=True, capture_output=True, cwd=folder, env=ENV)
    return time.perf_counter() - start


def report(label: str, seconds: list[float]) -> None:
    runs = ", ".join(f"{s:.1f}" for s in seconds)
    print(f"{label:<44} median {statistics.median(seconds):7.1f} s   (runs: {runs})   "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)


def measure(parts: list[str], args, root: Path, loaded: bool) -> None:
    where = f"beside {args.hogs} spinners" if loaded else "quiet"
    if "threads" in parts:
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.runs):
            for threads in times:
                times[threads].append(train_seconds(threads, args.cell, args.epochs))
        for threads, seconds in times.items():
            report(f"{args.cell}, {args.epochs} epochs, {threads} thread{'s' * (threads > 1)}, {where}", seconds)
    if "notebook" in parts:
        report(f"notebook ({args.source.name}), {where}",
               [notebook_seconds(args.source, root) for _ in range(args.runs)])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="threads,notebook")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hogs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--source", type=Path, default=SOURCE_NOTEBOOK.parent,
                        help="a folder with the notebook and captioning_helpers.py")
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    print(f"notebook benchmarks: {len(os.sched_getaffinity(0))} CPUs, python {sys.version.split()[0]}", flush=True)
    with tempfile.TemporaryDirectory() as root:
        measure(parts, args, Path(root), loaded=False)
        spinners = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
        try:
            measure(parts, args, Path(root), loaded=True)
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()


if __name__ == "__main__":
    main()
