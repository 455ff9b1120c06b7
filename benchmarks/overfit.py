"""Overfit 50 training examples of the COCO subset with each cell type, on CPU.

Prints the final training loss and the seconds taken per cell type, against the EECS 498
A5 targets (rnn < 0.5, lstm < 4, attn < 9). Uses the ImageNet-pretrained encoder when its
weights are cached, else a seeded random one (this machine is offline); the figure says which.

    python -m benchmarks.overfit [--device cpu] [--epochs 80]
"""

import argparse
import os
import time

import torch

from solution.captioning import CELL_TYPES, CaptioningRNN, pretrained_weights_path

TARGETS = {"rnn": 0.5, "lstm": 4.0, "attn": 9.0}


def overfit(data, cell_type, num_examples, epochs, batch_size, lr, device, pretrained):
    """Train on the first caption of each of the first num_examples images (one caption per
    image, as in EECS 498's coco.pt: an image with five captions cannot be memorised);
    returns (final loss over those examples, seconds)."""
    torch.manual_seed(0)
    model = CaptioningRNN(data["vocab"]["token_to_idx"], cell_type=cell_type,
                          image_encoder_pretrained=pretrained, ignore_index=0).to(device)
    image_idxs = data["train_image_idxs"]
    first_rows = torch.searchsorted(image_idxs, torch.arange(num_examples))  # captions grouped by image
    captions = data["train_captions"][first_rows].to(device)
    images = data["train_images"][image_idxs[first_rows]].to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    # The encoder is frozen: encode once, then the model takes the features in place of images.
    images = model.image_encoder(images)
    for _ in range(epochs):
        for batch in torch.randperm(num_examples, generator=generator).split(batch_size):
            loss = model(images[batch], captions[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        final = model(images, captions).item()  # the loss over all examples after training
    return final, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/coco.pt")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()

    data = torch.load(args.data, weights_only=True)
    pretrained = os.path.exists(pretrained_weights_path())
    print(f"overfitting {args.examples} examples, {args.epochs} epochs, batch {args.batch_size}, "
          f"Adam lr {args.lr}, device {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, "
          f"encoder {'pretrained' if pretrained else 'random (seeded; no cached weights)'}")
    print(f"{'cell':<6}{'final loss':>12}{'target':>9}{'seconds':>10}  result")
    failures = 0
    for cell_type in CELL_TYPES:
        loss, seconds = overfit(data, cell_type, args.examples, args.epochs, args.batch_size,
                                args.lr, args.device, pretrained)
        ok = loss < TARGETS[cell_type]
        failures += not ok
        print(f"{cell_type:<6}{loss:>12.4f}{'< ' + str(TARGETS[cell_type]):>9}{seconds:>10.1f}  "
              f"{'meets target' if ok else 'MISSES TARGET'}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
