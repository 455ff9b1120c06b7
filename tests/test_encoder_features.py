"""The grader's encoder features: computed once per data and library versions, then cached.

The expected features come from the provided ImageEncoder run here on the images, one
small batch at a time, never from the cache under test.
"""

import pytest
import torch

from autograder import checks
from conftest import COCO_PT
from solution import captioning as reference


@pytest.fixture(scope="module")
def small_coco():
    coco = torch.load(COCO_PT, weights_only=True)
    return {"val_images": coco["val_images"][:5]}


def encoded_here(images):
    torch.manual_seed(checks.ENCODER_SEED)
    encoder = reference.ImageEncoder(pretrained=False, verbose=False).double()
    with torch.no_grad():
        return torch.cat([encoder(images[i:i + 2]) for i in range(0, len(images), 2)])


def test_features_are_the_seeded_encoders_and_are_cached(small_coco, tmp_path):
    cache = tmp_path / "features.pt"
    features = checks.encoder_features(small_coco, cache)
    expected = encoded_here(small_coco["val_images"])
    assert features.dtype == torch.float64 and features.shape == (5, 400, 4, 4)
    assert checks.rel_error(features, expected) < 1e-12
    assert cache.is_file()
    assert torch.equal(checks.encoder_features(small_coco, cache), features)


@pytest.mark.parametrize("damage", ["stale", "truncated", "not a torch file"])
def test_a_damaged_or_stale_cache_is_replaced_by_correct_features(small_coco, tmp_path, damage):
    cache = tmp_path / "features.pt"
    if damage == "stale":  # features of other images (a rebuilt coco.pt, another torchvision)
        torch.save({"key": "another key", "features": torch.zeros(5, 400, 4, 4, dtype=torch.float64)}, cache)
    elif damage == "truncated":
        checks.encoder_features(small_coco, cache)
        cache.write_bytes(cache.read_bytes()[:1000])
    else:
        cache.write_text("garbage")
    features = checks.encoder_features(small_coco, cache)
    assert checks.rel_error(features, encoded_here(small_coco["val_images"])) < 1e-12
    assert torch.load(cache, weights_only=True)["key"] == checks.features_key(small_coco)


def test_features_are_computed_where_no_cache_can_be_written(small_coco, tmp_path):
    not_a_folder = tmp_path / "a file"  # unwritable for root too
    not_a_folder.write_text("")
    features = checks.encoder_features(small_coco, not_a_folder / "features.pt")
    assert checks.rel_error(features, encoded_here(small_coco["val_images"])) < 1e-12


def test_the_key_changes_with_the_images(small_coco):
    other = {"val_images": small_coco["val_images"].flip(0)}
    assert checks.features_key(other) != checks.features_key(small_coco)
