"""Building coco.pt: the format, determinism, and clear errors for a bad source."""


import pytest
import torch

from conftest import MIRROR
from data import coco


@pytest.fixture
def mirror_copy(tmp_path):
    """A writable copy of the mirror: symbolic links to the read-only files, so a test can
    replace one of them with a damaged copy."""
    root = tmp_path / "mirror"
    for path in MIRROR.rglob("*"):
        if path.is_file():
            target = root / path.relative_to(MIRROR)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return root


SMALL = {"max_train_images": 3, "max_val_images": 2}


def test_tokenize_and_encode_worked_by_hand():
    assert coco.tokenize("A Man's dog, on a skate-board.") == ["a", "mans", "dog", "on", "a", "skate", "board"]
    vocab = {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3, "a": 4, "dog": 5}
    assert coco.encode_caption(["a", "big", "dog"], vocab) == [1, 4, 3, 5, 2] + [0] * 12
    long = coco.encode_caption(["a"] * 20, vocab)
    assert len(long) == 17 and long == [1] + [4] * 15 + [2]


def test_vocab_orders_by_count_then_alphabet_and_applies_the_threshold():
    tokens = [["b", "a", "c"], ["a", "b", "d"], ["a"]]
    assert coco.build_vocab(tokens, min_count=2) == ["<NULL>", "<START>", "<END>", "<UNK>", "a", "b"]
    assert coco.build_vocab(tokens, min_count=1)[4:] == ["a", "b", "c", "d"]


def test_built_file_has_the_documented_format(coco_built):
    data = coco_built
    idx_to_token = data["vocab"]["idx_to_token"]
    assert idx_to_token[:4] == ["<NULL>", "<START>", "<END>", "<UNK>"]
    assert all(data["vocab"]["token_to_idx"][t] == i for i, t in enumerate(idx_to_token))
    for split, n_images in [("train", 80), ("val", 159)]:
        images, captions = data[f"{split}_images"], data[f"{split}_captions"]
        idxs = data[f"{split}_image_idxs"]
        assert images.dtype == torch.uint8 and images.shape == (n_images, 3, 112, 112)
        assert captions.dtype == torch.int64 and captions.shape == (5 * n_images, 17)
        assert idxs.dtype == torch.int64 and torch.equal(idxs, torch.arange(n_images).repeat_interleave(5))
        assert data[f"{split}_image_ids"].shape == (n_images,)
        assert torch.all(captions[:, 0] == 1)
        for row in captions.tolist():
            end = row.index(2)
            assert 2 <= end <= 16 and all(t == 0 for t in row[end + 1 :]) and 0 not in row[:end]
            assert all(t < len(idx_to_token) for t in row)
    # Images are real photographs, not blank: every image varies.
    assert data["train_images"].float().flatten(1).std(dim=1).min() > 10


def test_first_train_caption_decodes_to_its_annotation(coco_built):
    import json

    annotations = json.loads((MIRROR / "annotations" / "captions_train2017.json").read_text())
    first_id = min(im["id"] for im in annotations["images"])
    first_caption = min((a for a in annotations["annotations"] if a["image_id"] == first_id), key=lambda a: a["id"])
    tokens = [coco_built["vocab"]["idx_to_token"][i] for i in coco_built["train_captions"][0].tolist()]
    words = tokens[1 : tokens.index("<END>")]
    known = coco_built["vocab"]["token_to_idx"]
    expected = [w if w in known else "<UNK>" for w in coco.tokenize(first_caption["caption"])]
    assert coco_built["train_image_ids"][0].item() == first_id
    assert words == expected[:15]


@pytest.fixture(scope="module")
def coco_built(tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "coco.pt"
    coco.build(MIRROR, out)
    return torch.load(out, weights_only=True)


def test_build_is_deterministic(tmp_path):
    first, second = (coco.build_dataset(MIRROR, **SMALL) for _ in range(2))
    assert first["vocab"] == second["vocab"]
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, second[key]), key


def test_missing_image_is_named_and_nothing_is_written(mirror_copy, tmp_path):
    victim = sorted((mirror_copy / "train2017").iterdir())[0]
    victim.unlink()
    out = tmp_path / "out" / "coco.pt"
    with pytest.raises(coco.DataSourceError, match=f"source file missing: {victim}"):
        coco.build(mirror_copy, out, **SMALL)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_corrupt_image_is_named_and_the_previous_output_is_kept(mirror_copy, tmp_path):
    victim = sorted((mirror_copy / "val2017").iterdir())[1]
    payload = bytearray(victim.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    victim.unlink()
    victim.write_bytes(bytes(payload))
    out = tmp_path / "coco.pt"
    out.write_bytes(b"previous build")
    with pytest.raises(coco.DataSourceError, match=f"checksum mismatch for {victim}"):
        coco.build(mirror_copy, out, **SMALL)
    assert out.read_bytes() == b"previous build"
    assert [p.name for p in tmp_path.iterdir() if p.name != "mirror"] == ["coco.pt"]


def test_corrupt_annotations_are_named(mirror_copy, tmp_path):
    victim = mirror_copy / "annotations" / "captions_train2017.json"
    victim.unlink()
    victim.write_text("{}")
    with pytest.raises(coco.DataSourceError, match="checksum mismatch for .*captions_train2017.json"):
        coco.build(mirror_copy, tmp_path / "coco.pt", **SMALL)


def test_missing_checksum_file_and_missing_source(mirror_copy, tmp_path):
    (mirror_copy / "SHA256SUMS").unlink()
    with pytest.raises(coco.DataSourceError, match="checksum file missing"):
        coco.build_dataset(mirror_copy)
    with pytest.raises(coco.DataSourceError, match="COCO source folder not found"):
        coco.build_dataset(tmp_path / "nowhere")


def test_command_line_reports_errors_without_a_traceback(tmp_path, capsys):
    status = coco.main(["--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "coco.pt")])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: COCO source folder not found") and "Traceback" not in err
    assert not (tmp_path / "coco.pt").exists()


def test_download_failure_says_how_to_work_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("no_proxy", "")
    with pytest.raises(coco.DataSourceError, match="could not download .*annotations_trainval2017.zip(.|\n)*--source"):
        coco.download_official(tmp_path / "cache")
