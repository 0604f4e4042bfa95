"""The paper's resolution path: every sample resampled once, to 768 (2048 px sources) or 1024
(3072 px) in a 768 run; training crops follow the stored side; batches never mix sides;
validation and prediction see the whole stored image."""

import functools

import cv2
import numpy as np
import torch

from hpa.config import load_arch_config
from hpa.data.arrays import read_prepared as load_prepared
from hpa.data.dataset import HPADataset
from hpa.data.images import read_sample
from hpa.data.preparation import prepare_one
from hpa.data.resolution import crop_side
from hpa.data.sampling import SideBatchSampler


def _window_of(big: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    """Where `crop` lies in `big`, found from an 8 x 8 corner and then checked pixel for pixel."""
    res = cv2.matchTemplate(big[:, :, 1], crop[:8, :8, 1], cv2.TM_SQDIFF)
    r, c = np.unravel_index(np.argmin(res), res.shape)
    h = crop.shape[0]
    np.testing.assert_array_equal(big[r:r + h, c:c + h], crop)
    return int(r), int(c)


def test_a_3072_px_sample_is_resampled_once_and_keeps_its_side(real_samples, tmp_path):
    images, rows = real_samples
    sid = next(r[0] for r in rows if r[2].startswith("3072"))
    src = read_sample(images, sid)
    assert src.shape[:2] == (3072, 3072)
    assert prepare_one((str(images), str(tmp_path), sid, 768, None)) == (sid, None)
    stored = load_prepared(tmp_path, sid)
    assert stored.shape == (1024, 1024, 4)  # 3072 -> 1024 in a 768 run
    np.testing.assert_array_equal(stored, cv2.resize(src, (1024, 1024), interpolation=cv2.INTER_AREA))

    cfg = load_arch_config("se_resnext50")
    crop_for = functools.partial(crop_side, size=cfg.size, crop=cfg.crop, crop_large=cfg.crop_large)
    y = np.zeros((1, 28), np.float32)
    x, _ = HPADataset(tmp_path, [sid], y, crop_for=crop_for, seed=0, augment=False)[0]
    assert x.shape == (4, 768, 768)  # "768 x 768 patches from 1024 x 1024 images"
    crop = (x.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
    _window_of(stored, crop)  # a window of the stored pixels: no second resampling
    x_aug, _ = HPADataset(tmp_path, [sid], y, crop_for=crop_for, seed=0)[0]
    assert x_aug.shape == (4, 768, 768)
    assert HPADataset(tmp_path, [sid], y).sides() == [1024]  # from the .npy header alone
    whole, _ = HPADataset(tmp_path, [sid], y)[0]  # validation: the whole stored image
    assert torch.equal(whole, torch.from_numpy(stored.transpose(2, 0, 1).copy()).float() / 255)


def test_crop_sides_follow_the_stored_side():
    assert crop_side(768, 768, 512) == 512
    assert crop_side(1024, 768, 512) == 683  # 2/3 of the side by default
    assert crop_side(1024, 768, 512, crop_large=768) == 768  # the paper's configs
    assert crop_side(1024, 768, None) is None
    assert crop_side(64, 64, 48) == 48 and crop_side(85, 64, 48) == 64


def test_batches_hold_one_side_and_shard_exactly_across_ranks():
    rng = np.random.default_rng(0)
    sides = rng.choice([768, 1024], size=103).tolist()
    one = SideBatchSampler(sides, batch_size=8, world=1, seed=5)
    one.set_epoch(3)
    batches = list(one)
    assert all(len({sides[i] for i in b}) == 1 for b in batches)
    assert len(batches) == len(one) and all(len(b) == 8 for b in batches)
    used = [i for b in batches for i in b]
    assert len(used) == len(set(used)) and len(used) > 103 - 2 * 8  # only each side's remainder is dropped
    # 2 processes share each global batch of 8 (4 each): step by step, the samples of 1 process
    ranks = [SideBatchSampler(sides, batch_size=8, world=2, rank=r, seed=5) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(3)
    for b, b0, b1 in zip(batches, *ranks, strict=True):
        assert sorted(b) == sorted(b0 + b1) and len(b0) == len(b1) == 4
    other = SideBatchSampler(sides, batch_size=8, seed=5)
    other.set_epoch(4)
    assert list(other) != batches  # a new order each epoch
    val = list(SideBatchSampler(sides, batch_size=8, shuffle=False, drop_last=False))
    assert sorted(i for b in val for i in b) == list(range(103))  # validation sees every sample once
