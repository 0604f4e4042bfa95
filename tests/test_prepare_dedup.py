import shutil
import subprocess
import sys

import cv2
import imagehash
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import ROOT, shared_path
from hpa.data.arrays import read_prepared as load_prepared
from hpa.data.hashing import hamming, near_duplicate_pairs, phash, sample_hashes
from hpa.data.images import read_sample, write_sample_png
from hpa.data.labels import COLORS


def run(*args):
    r = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    return r


@pytest.fixture(scope="module")
def real_dataset(real_samples, tmp_path_factory):
    """The 8 real samples as a Kaggle-layout train set."""
    images, rows = real_samples
    d = tmp_path_factory.mktemp("real")
    (d / "train").mkdir()
    for sid, _, _ in rows:
        for c in COLORS:
            shutil.copy(images / f"{sid}_{c}.png", d / "train" / f"{sid}_{c}.png")
    pd.DataFrame([(s, t) for s, t, _ in rows], columns=["Id", "Target"]).to_csv(d / "train.csv", index=False)
    return d, rows


@pytest.mark.slow
def test_prepare_full_size_rule_shards_and_idempotence(real_dataset):
    d, rows = real_dataset
    for shard in ("0/2", "1/2"):
        r = run("input_prep/prepare.py", "--data-dir", d, "--size", 768, "--shard", shard, "--workers", 2)
        assert r.returncode == 0, r.stderr
    store = d / "prepared" / "768" / "train"
    assert sorted(p.stem for p in store.glob("*.npy")) == sorted(r[0] for r in rows)
    for sid, _, size in rows:
        arr = load_prepared(store, sid)
        side = {"512x512": 768, "2048x2048": 768, "3072x3072": 1024}[size]  # the paper's rule
        assert arr.shape == (side, side, 4) and arr.dtype == np.uint8
        ref = cv2.resize(read_sample(d / "train", sid), (side, side), interpolation=cv2.INTER_AREA if side < int(
            size.split("x")[0]) else cv2.INTER_LINEAR)
        assert np.array_equal(arr, ref)
    mtimes = {p: p.stat().st_mtime_ns for p in store.iterdir()}
    r = run("input_prep/prepare.py", "--data-dir", d, "--size", 768)
    assert r.returncode == 0
    assert {p: p.stat().st_mtime_ns for p in store.iterdir()} == mtimes  # nothing redone
    assert not list(store.glob(".*"))  # no temporary files left


@pytest.mark.slow
def test_prepare_reports_broken_samples(tmp_path):
    (tmp_path / "train").mkdir()
    write_sample_png(tmp_path / "train", "good", np.zeros((64, 64, 4), np.uint8))
    write_sample_png(tmp_path / "train", "bad", np.zeros((64, 64, 4), np.uint8))
    (tmp_path / "train" / "bad_green.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "train.csv").write_text("Id,Target\ngood,0\nbad,1\n")
    r = run("input_prep/prepare.py", "--data-dir", tmp_path, "--size", 32)
    assert r.returncode == 1
    fails = pd.read_csv(tmp_path / "prepared" / "32" / "failures_train.csv")
    assert fails["Id"].tolist() == ["bad"] and "bad_green.png" in fails["error"][0]
    assert (tmp_path / "prepared" / "32" / "train" / "good.npy").is_file()
    assert not (tmp_path / "prepared" / "32" / "train" / "bad.npy").exists()


def test_phash_agrees_with_imagehash_on_real_channels(real_samples):
    shared_path("hpa-samples")  # the tie rate is a property of real microscopy, not of synthetic stand-ins
    images, rows = real_samples
    diffs = []
    for sid, _, _ in rows:
        img = read_sample(images, sid)
        for k in range(3):
            ours = int(phash(img[:, :, k]))
            ref = imagehash.phash(Image.fromarray(img[:, :, k]))
            ref_int = int("".join("1" if b else "0" for b in ref.hash.flatten()), 2)
            diffs.append(bin(ours ^ ref_int).count("1"))
    # the same bits except where a coefficient sits at the median (OpenCV area vs PIL resampling)
    assert np.mean(diffs) <= 1 and max(diffs) <= 4, diffs


def modified_copies(img):
    rng = np.random.default_rng(0)
    h = img.shape[0]
    small = cv2.resize(cv2.resize(img, (h // 2, h // 2), interpolation=cv2.INTER_AREA), (h, h))
    jpeg = np.stack([cv2.imdecode(cv2.imencode(".jpg", img[:, :, k], [cv2.IMWRITE_JPEG_QUALITY, 70])[1], 0)
                     for k in range(4)], -1)
    bright = np.clip(img.astype(float) * 1.15 + 5 + rng.normal(0, 1, img.shape), 0, 255).astype(np.uint8)
    return {"rescaled": small, "jpeg": jpeg, "brightened": bright}


def test_near_duplicates_of_real_samples_are_found(real_samples):
    images, rows = real_samples
    originals = [read_sample(images, sid) for sid, _, _ in rows]
    hashes = [sample_hashes(im) for im in originals]
    names = [sid for sid, _, _ in rows]
    for im, sid in zip(originals[:4], names[:4]):
        for kind, copy in modified_copies(im).items():
            hashes.append(sample_hashes(copy))
            names.append(f"{sid}:{kind}")
    h = np.stack(hashes)
    pairs, dist = near_duplicate_pairs(h, threshold=16)
    found = {frozenset((names[i], names[j])) for i, j in pairs}
    for sid in names[:4]:
        for kind in ("rescaled", "jpeg", "brightened"):
            assert frozenset((sid, f"{sid}:{kind}")) in found, (sid, kind)
    for i in range(8):  # the 8 different real samples are never matched with each other
        for j in range(i + 1, 8):
            assert frozenset((names[i], names[j])) not in found
            assert hamming(h[i], h[j]).sum() > 16


def test_pair_search_matches_brute_force():
    rng = np.random.default_rng(3)
    h = rng.integers(0, 2 ** 63, (700, 3), dtype=np.int64).astype(np.uint64)
    for a, b, flips in ((5, 6, 3), (10, 11, 20), (12, 400, 24), (13, 500, 25)):
        h[b] = h[a]
        for f in rng.choice(192, flips, replace=False):
            h[b, f // 64] ^= np.uint64(1) << np.uint64(f % 64)
    pairs, dist = near_duplicate_pairs(h, threshold=24, block=128)
    d = sum(hamming(h[:, None, c], h[None, :, c]) for c in range(3))
    iu = np.triu_indices(len(h), 1)
    brute = {(int(i), int(j)) for i, j, v in zip(*iu, d[iu]) if v <= 24}
    assert {(int(i), int(j)) for i, j in pairs} == brute
    assert (5, 6) in brute and (12, 400) in brute and (13, 500) not in brute
    assert all(d[i, j] == v for (i, j), v in zip(pairs, dist))


def test_prepare_redoes_a_sample_whose_full_size_tiff_arrived_later(tmp_path):
    import os

    import tifffile

    from hpa.cli import prepare

    rng = np.random.default_rng(0)
    (tmp_path / "train").mkdir()
    for sid in ("a", "b"):
        write_sample_png(tmp_path / "train", sid, rng.integers(0, 255, (64, 64, 4), dtype=np.uint8))
    (tmp_path / "train.csv").write_text("Id,Target\na,0\nb,1\n")
    assert prepare.main(["--data-dir", str(tmp_path), "--size", "32", "--workers", "1"]) == 0
    store = tmp_path / "prepared" / "32" / "train"
    before = {p.name: p.stat().st_mtime_ns for p in store.iterdir()}
    full = rng.integers(0, 255, (256, 256, 4), dtype=np.uint8)
    for k, c in enumerate(COLORS):  # the original of "a", fetched after the PNG was prepared
        tifffile.imwrite(tmp_path / "train" / f"a_{c}.tif", full[:, :, k])
        os.utime(tmp_path / "train" / f"a_{c}.tif", ns=(before["a.npy"] + 10**9,) * 2)
    assert prepare.main(["--data-dir", str(tmp_path), "--size", "32", "--workers", "1"]) == 0
    assert np.array_equal(load_prepared(store, "a"), cv2.resize(full, (32, 32), interpolation=cv2.INTER_AREA))
    assert (store / "b.npy").stat().st_mtime_ns == before["b.npy"]  # unchanged sources: not redone
