"""Overfit the notebook's slice of the COCO subset with each cell type, on CPU.

The slice, the recipe and the targets are the notebook's, declared in captioning_helpers.py
(OVERFIT_EXAMPLES, OVERFIT_RECIPE, OVERFIT_TARGETS): training goes through the notebook's
train_captioner with one thread, as the notebook does. Prints, per cell type and seed, the
final loss over the slice, how many of its captions greedy sampling gives back word for word
(memorising means all), and the seconds. Uses the ImageNet-pretrained encoder when its
weights are cached, else a random one drawn from the seed (this machine is offline).
Flags override the recipe, to look for another:

    python -m benchmarks.overfit [--seeds 0,1,2] [--cells rnn,lstm,attn] [--epochs N] [--lr X]
"""

import argparse
import contextlib
import os
import sys
import time

import torch

from autograder import SOURCE_NOTEBOOK
from solution.captioning import CELL_TYPES, CaptioningRNN, pretrained_weights_path

sys.path.insert(0, str(SOURCE_NOTEBOOK.parent))
import captioning_helpers as helpers  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/coco.pt")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cells", default=",".join(CELL_TYPES))
    for name, value in helpers.OVERFIT_RECIPE.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    recipe = {name: getattr(args, name) for name in helpers.OVERFIT_RECIPE}

    data = helpers.load_coco(args.data)
    images, captions = helpers.overfit_slice(data)
    pretrained = os.path.exists(pretrained_weights_path())
    print(f"overfitting {len(captions)} examples, {recipe}, Adam, CPU, torch {torch.__version__}, "
          f"{helpers.limit_threads()} thread, "
          f"encoder {'pretrained' if pretrained else 'random (drawn from the seed; no cached weights)'}")
    print(f"{'cell':<6}{'seed':>5}{'final loss':>12}{'target':>9}{'memorised':>11}{'seconds':>9}  result")
    failures = 0
    for cell_type in args.cells.split(","):
        for seed in map(int, args.seeds.split(",")):
            torch.manual_seed(seed)
            model = CaptioningRNN(data["vocab"]["token_to_idx"], cell_type=cell_type, ignore_index=0,
                                  image_encoder_pretrained=pretrained)
            start = time.perf_counter()
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # its final line
                helpers.train_captioner(model, images, captions, device=torch.device("cpu"), **recipe)
            seconds = time.perf_counter() - start
            loss, exact = helpers.overfit_result(model, images, captions)
            target = helpers.OVERFIT_TARGETS[cell_type]
            ok = loss < target and exact == len(captions)
            failures += not ok
            print(f"{cell_type:<6}{seed:>5}{loss:>12.4f}{'< ' + str(target):>9}{f'{exact}/{len(captions)}':>11}"
                  f"{seconds:>9.1f}  {'meets targets' if ok else 'MISSES TARGETS'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
