"""Build ``coco.pt``, the captioning data set, from a COCO 2017-style source.

Sources, in the order the kit prefers them:

* a local mirror laid out like the official download (``train2017/``, ``val2017/``,
  ``annotations/captions_{train,val}2017.json``) with a ``SHA256SUMS`` file; by default
  ``../shared/data/coco_mini`` beside the repository;
* the official COCO URLs (``--download CACHE_DIR``): the caption files and the selected
  images are fetched into ``CACHE_DIR``, which then becomes such a mirror.

The output is one file in the format of EECS 498 A5's ``coco.pt`` (see the README, "Data").
Everything here is deterministic: the same source and options give the same tensors.

Usage::

    python -m data.coco --source ../shared/data/coco_mini --out data/coco.pt
    python -m data.coco --download ~/coco2017 --out data/coco.pt   # needs internet
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "coco_mini"
DEFAULT_OUT = REPO_ROOT / "data" / "coco.pt"

FORMAT_VERSION = 1
SPECIAL_TOKENS = ("<NULL>", "<START>", "<END>", "<UNK>")
NULL, START, END, UNK = range(4)
MAX_WORDS = 15  # a caption row is <START>, up to 15 words, <END>, then <NULL> padding
CAPTION_LENGTH = MAX_WORDS + 2
IMAGE_SIZE = 112
SPLITS = ("train", "val")

OFFICIAL_ANNOTATIONS_URL = (
    "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"
)
OFFICIAL_IMAGE_URL = "http://images.cocodataset.org/{split}2017/{file_name}"


class DataSourceError(Exception):
    """The source is missing, incomplete or corrupt; the message names the file."""


# ---------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------


def tokenize(caption: str) -> list[str]:
    """Lower-case words of a caption: apostrophes dropped, other non-alphanumerics split.

    >>> tokenize("A man's dog, on a skate-board.")
    ['a', 'mans', 'dog', 'on', 'a', 'skate', 'board']
    """
    text = caption.lower().replace("'", "")
    return re.sub(r"[^a-z0-9]+", " ", text).split()


def build_vocab(token_lists: list[list[str]], min_count: int) -> list[str]:
    """``idx_to_token``: the four special tokens, then every word seen at least
    ``min_count`` times, most frequent first, ties in alphabetical order."""
    counts = collections.Counter(word for tokens in token_lists for word in tokens)
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return list(SPECIAL_TOKENS) + words


def encode_caption(tokens: list[str], token_to_idx: dict[str, int]) -> list[int]:
    """One caption row of length 17: ``<START> w1 .. wk <END> <NULL>...``, k <= 15.

    Words past the 15th are dropped; words outside the vocabulary become ``<UNK>``.
    """
    words = [token_to_idx.get(w, UNK) for w in tokens[:MAX_WORDS]]
    row = [START, *words, END]
    return row + [NULL] * (CAPTION_LENGTH - len(row))


# ---------------------------------------------------------------------------------------
# Source files
# ---------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checksums(root: Path) -> dict[str, str]:
    """``SHA256SUMS`` of a source as ``{relative path: hex digest}``."""
    sums_path = root / "SHA256SUMS"
    if not root.is_dir():
        raise DataSourceError(
            f"COCO source folder not found: {root}\n"
            "Point --source at a COCO 2017-style mirror, or use --download CACHE_DIR "
            "to fetch the official files (needs internet)."
        )
    if not sums_path.is_file():
        raise DataSourceError(f"checksum file missing: {sums_path}")
    sums = {}
    for line_no, line in enumerate(sums_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            raise DataSourceError(f"malformed line {line_no} in {sums_path}: {line!r}")
        sums[parts[1].lstrip("*").strip()] = parts[0]
    return sums


def verified_path(root: Path, relative: str, sums: dict[str, str]) -> Path:
    """The path of ``root/relative`` after checking it exists and matches SHA256SUMS."""
    path = root / relative
    if relative not in sums:
        raise DataSourceError(f"{path} is not listed in {root / 'SHA256SUMS'}")
    if not path.is_file():
        raise DataSourceError(f"source file missing: {path}")
    actual = sha256_of(path)
    if actual != sums[relative]:
        raise DataSourceError(
            f"checksum mismatch for {path}: expected {sums[relative]}, got {actual}. "
            "The file is corrupt or was changed; restore it from the original source."
        )
    return path


def load_annotations(root: Path, split: str, sums: dict[str, str]) -> dict:
    path = verified_path(root, f"annotations/captions_{split}2017.json", sums)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataSourceError(f"{path} is not valid JSON: {exc}") from exc


def select_images(annotations: dict, split: str, available: set[str], max_images: int) -> list[dict]:
    """Image entries of a split that the source holds, lowest COCO id first, at most
    ``max_images`` of them; only images with at least one caption are eligible."""
    captioned = {a["image_id"] for a in annotations["annotations"]}
    entries = [
        image
        for image in sorted(annotations["images"], key=lambda image: image["id"])
        if image["id"] in captioned and f"{split}2017/{image['file_name']}" in available
    ]
    return entries[:max_images]


def load_image(path: Path) -> torch.Tensor:
    """A source image as uint8 (3, 112, 112): RGB, squashed to a square (no crop, so the
    whole scene the captions describe stays in view), bicubic with antialiasing."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise DataSourceError(f"cannot decode image {path}: {exc}") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------------------------------
# Building coco.pt
# ---------------------------------------------------------------------------------------


def build_dataset(
    source: Path,
    min_count: int = 2,
    max_train_images: int = 10_000,
    max_val_images: int = 500,
) -> dict:
    """Read and verify a source and return the ``coco.pt`` dictionary.

    Returns keys ``{split}_images`` uint8 (N_img, 3, 112, 112), ``{split}_captions`` int64
    (N_cap, 17), ``{split}_image_idxs`` int64 (N_cap,) (row of the image each caption
    describes), ``{split}_image_ids`` int64 (N_img,) (COCO ids, for attribution), ``vocab``
    and ``meta``.
    """
    source = Path(source)
    sums = read_checksums(source)
    available = set(sums)
    limits = {"train": max_train_images, "val": max_val_images}

    splits = {}
    for split in SPLITS:
        annotations = load_annotations(source, split, sums)
        images = select_images(annotations, split, available, limits[split])
        if not images:
            raise DataSourceError(f"no {split}2017 image of the caption file is in {source}")
        captions_by_image = collections.defaultdict(list)
        for annotation in sorted(annotations["annotations"], key=lambda a: a["id"]):
            captions_by_image[annotation["image_id"]].append(annotation["caption"])
        splits[split] = (images, captions_by_image)

    # The vocabulary comes from training captions only, so val keeps unseen words as <UNK>.
    train_images, train_captions = splits["train"]
    train_tokens = [tokenize(c) for image in train_images for c in train_captions[image["id"]]]
    idx_to_token = build_vocab(train_tokens, min_count)
    token_to_idx = {token: idx for idx, token in enumerate(idx_to_token)}

    dataset = {}
    for split, (images, captions_by_image) in splits.items():
        pixels, rows, image_idxs = [], [], []
        for image_idx, image in enumerate(images):
            path = verified_path(source, f"{split}2017/{image['file_name']}", sums)
            pixels.append(load_image(path))
            for caption in captions_by_image[image["id"]]:
                rows.append(encode_caption(tokenize(caption), token_to_idx))
                image_idxs.append(image_idx)
        dataset[f"{split}_images"] = torch.stack(pixels)
        dataset[f"{split}_captions"] = torch.tensor(rows, dtype=torch.int64)
        dataset[f"{split}_image_idxs"] = torch.tensor(image_idxs, dtype=torch.int64)
        dataset[f"{split}_image_ids"] = torch.tensor([im["id"] for im in images], dtype=torch.int64)
        dataset[f"{split}_licenses"] = torch.tensor([im.get("license", 0) for im in images], dtype=torch.int64)

    dataset["vocab"] = {"idx_to_token": idx_to_token, "token_to_idx": token_to_idx}
    dataset["meta"] = {
        "format_version": FORMAT_VERSION,
        "min_count": min_count,
        "max_words": MAX_WORDS,
        "image_size": IMAGE_SIZE,
        "source_sha256": {
            f"annotations/captions_{split}2017.json": sums[f"annotations/captions_{split}2017.json"]
            for split in SPLITS
        },
    }
    return dataset


def save_atomically(obj, out: Path) -> None:
    """``torch.save`` to a temporary file beside ``out``, then rename: a build that fails
    or is interrupted never leaves a half-written ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def build(source: Path, out: Path, **options) -> dict:
    """Build from ``source`` and write ``out`` atomically; returns the dataset."""
    dataset = build_dataset(source, **options)
    save_atomically(dataset, out)
    return dataset


# ---------------------------------------------------------------------------------------
# The official download (for machines with internet)
# ---------------------------------------------------------------------------------------


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    except OSError as exc:
        raise DataSourceError(
            f"could not download {url}: {exc}\n"
            "Without internet, build from a local mirror instead: --source DIR."
        ) from exc


def _write_file(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def download_official(cache: Path, max_train_images: int = 10_000, max_val_images: int = 500) -> Path:
    """Fetch the caption files and the selected images into ``cache`` as a mirror.

    COCO publishes no checksums, so the first download records ``SHA256SUMS`` and later
    builds from ``cache`` verify against it (files already present are not fetched again).
    """
    cache = Path(cache)
    sums_path = cache / "SHA256SUMS"
    sums = read_checksums(cache) if sums_path.is_file() else {}

    needed = [f"annotations/captions_{split}2017.json" for split in SPLITS]
    if any(not (cache / name).is_file() for name in needed):
        print(f"downloading {OFFICIAL_ANNOTATIONS_URL} (about 250 MB)", file=sys.stderr)
        with zipfile.ZipFile(io.BytesIO(_fetch(OFFICIAL_ANNOTATIONS_URL))) as archive:
            for name in needed:
                _write_file(cache / name, archive.read(name))
    for name in needed:
        sums.setdefault(name, sha256_of(cache / name))

    limits = {"train": max_train_images, "val": max_val_images}
    for split in SPLITS:
        annotations = load_annotations(cache, split, sums)
        every_image = {f"{split}2017/{im['file_name']}" for im in annotations["images"]}
        for image in select_images(annotations, split, every_image, limits[split]):
            relative = f"{split}2017/{image['file_name']}"
            if not (cache / relative).is_file():
                url = OFFICIAL_IMAGE_URL.format(split=split, file_name=image["file_name"])
                _write_file(cache / relative, _fetch(url))
            sums.setdefault(relative, sha256_of(cache / relative))

    _write_file(sums_path, "".join(f"{h}  {name}\n" for name, h in sorted(sums.items())).encode())
    return cache


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.coco", description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                       help="COCO 2017-style mirror with SHA256SUMS (default: %(default)s)")
    where.add_argument("--download", type=Path, metavar="CACHE_DIR",
                       help="fetch the official COCO files into CACHE_DIR first (needs internet)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: %(default)s")
    parser.add_argument("--min-count", type=int, default=2,
                        help="keep words seen at least this often in train captions (default: 2)")
    parser.add_argument("--max-train-images", type=int, default=10_000)
    parser.add_argument("--max-val-images", type=int, default=500)
    args = parser.parse_args(argv)

    limits = {"max_train_images": args.max_train_images, "max_val_images": args.max_val_images}
    try:
        source = download_official(args.download, **limits) if args.download else args.source
        dataset = build(source, args.out, min_count=args.min_count, **limits)
    except DataSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for split in SPLITS:
        print(f"{split}: {len(dataset[f'{split}_images'])} images, "
              f"{len(dataset[f'{split}_captions'])} captions")
    print(f"vocabulary: {len(dataset['vocab']['idx_to_token'])} tokens; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
