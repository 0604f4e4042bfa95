import shutil

import cv2
import numpy as np
import pytest
import tifffile

from hpa.core.atomic import atomic_path
from hpa.data.images import read_sample, to_uint8, write_sample_png
from hpa.data.labels import COLORS
from hpa.errors import SampleError
from hpa.prediction.inference import find_image_ids


def test_reads_all_real_samples_in_rgby_order(real_samples):
    images, rows = real_samples
    assert len(rows) == 8
    sides = set()
    for sid, _target, size in rows:
        img = read_sample(images, sid)
        side = int(size.split("x")[0])
        assert img.shape == (side, side, 4) and img.dtype == np.uint8
        for k, color in enumerate(COLORS):  # channel k is the <Id>_<color> file
            ref = cv2.imread(str(images / f"{sid}_{color}.png"), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(img[:, :, k], to_uint8(ref, images))
        assert img[:, :, 2].std() > 1  # nucleus stain has structure
        sides.add(side)
    assert sides == {512, 2048, 3072}


def _copy(real_samples, tmp_path, idx=0):
    images, rows = real_samples
    sid = rows[idx][0]
    for c in COLORS:
        shutil.copy(images / f"{sid}_{c}.png", tmp_path / f"{sid}_{c}.png")
    return sid


def test_tiff_8_and_16_bit(real_samples, tmp_path):
    images, rows = real_samples
    sid = rows[0][0]
    ref = read_sample(images, sid)
    d8, d16 = tmp_path / "t8", tmp_path / "t16"
    d8.mkdir()
    d16.mkdir()
    for k, c in enumerate(COLORS):
        tifffile.imwrite(d8 / f"{sid}_{c}.tif", ref[:, :, k])
        tifffile.imwrite(d16 / f"{sid}_{c}.tiff", ref[:, :, k].astype(np.uint16) * 257)
    assert np.array_equal(read_sample(d8, sid), ref)
    assert np.array_equal(read_sample(d16, sid), ref)  # v * 257 -> round(v*257*255/65535) = v


def test_16_bit_scaling_rule():
    v = np.array([0, 128, 257, 32767, 65535], np.uint16)
    assert to_uint8(v, "x").tolist() == [0, 0, 1, 127, 255]


def test_hpav18_rgb_jpeg_channels(real_samples, tmp_path):
    """External images store each stain as a coloured RGB JPEG; we take the stain's plane."""
    images, rows = real_samples
    sid = rows[0][0]
    ref = read_sample(images, sid)
    ext_id = "10580_1610_C1_1"
    for k, c in enumerate(COLORS):
        plane = ref[:, :, k]
        zero = np.zeros_like(plane)
        rgb = {"red": (plane, zero, zero), "green": (zero, plane, zero), "blue": (zero, zero, plane),
               "yellow": (plane, plane, zero)}[c]
        bgr = np.dstack(rgb[::-1])
        cv2.imwrite(str(tmp_path / f"{ext_id}_{c}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    img = read_sample(tmp_path, ext_id)
    assert img.shape == ref.shape
    err = np.abs(img.astype(int) - ref.astype(int)).mean(axis=(0, 1))
    assert (err < 5).all(), err  # JPEG chroma subsampling blurs the red plane most
    for k in range(4):
        assert np.corrcoef(img[:, :, k].ravel(), ref[:, :, k].ravel())[0, 1] > 0.9


def test_missing_channel_named(real_samples, tmp_path):
    sid = _copy(real_samples, tmp_path)
    (tmp_path / f"{sid}_yellow.png").unlink()
    with pytest.raises(SampleError, match=f"{sid}_yellow.png: channel file not found"):
        read_sample(tmp_path, sid)
    with pytest.raises(SampleError, match="nothere_red.png: channel file not found"):
        read_sample(tmp_path, "nothere")


def test_truncated_and_garbage_files_named(real_samples, tmp_path):
    sid = _copy(real_samples, tmp_path)
    p = tmp_path / f"{sid}_green.png"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(SampleError, match=f"{sid}_green.png: truncated"):
        read_sample(tmp_path, sid)
    p.write_bytes(b"this is not an image" * 10 + b"IEND....")
    with pytest.raises(SampleError, match=f"{sid}_green.png: cannot decode"):
        read_sample(tmp_path, sid)
    for c in ("green", "blue", "yellow"):  # sample x is whole but for its red TIFF
        tifffile.imwrite(tmp_path / f"x_{c}.tif", np.full((256, 256), 7, np.uint8))
    t = tmp_path / "x_red.tif"
    t.write_bytes(b"II*\x00garbage")
    with pytest.raises(SampleError, match="x_red.tif: cannot read image"):
        read_sample(tmp_path, "x")
    tifffile.imwrite(t, np.full((256, 256), 7, np.uint8))
    t.write_bytes(t.read_bytes()[:30000])
    with pytest.raises(SampleError, match="x_red.tif: truncated TIFF"):
        read_sample(tmp_path, "x")


def test_truncated_jpeg_named(tmp_path):
    plane = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    for c in COLORS:
        cv2.imwrite(str(tmp_path / f"e1_{c}.jpg"), np.dstack([plane] * 3))
    p = tmp_path / "e1_blue.jpg"
    p.write_bytes(p.read_bytes()[:-300])
    with pytest.raises(SampleError, match="e1_blue.jpg: truncated JPEG"):
        read_sample(tmp_path, "e1")


def test_channel_size_mismatch_named(tmp_path):
    img = np.zeros((32, 32, 4), np.uint8)
    write_sample_png(tmp_path, "s1", img)
    cv2.imwrite(str(tmp_path / "s1_blue.png"), np.zeros((16, 32), np.uint8))
    with pytest.raises(SampleError, match=r"s1_blue.png: size \(16, 32\) differs from .*s1_red.png"):
        read_sample(tmp_path, "s1")


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_stain_files_match_as_the_file_system_shows_them(tmp_path):
    """Stain suffixes and extensions in any case, each stain in its own format; a full-size TIFF beside
    a PNG is read; two other files for one stain are refused by name (hpa.data.images.stain_files)."""
    from hpa.data.images import stain_files
    from hpa.prediction.inference import check_raw_sample, find_image_ids

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (40, 40, 4), dtype=np.uint8)
    write_sample_png(tmp_path / "ref", "s1", img)
    d = tmp_path / "mixed"
    d.mkdir()
    for k, (name, ext) in enumerate([("Red", "PNG"), ("green", "png"), ("BLUE", "Png"), ("Yellow", "TIFF")]):
        if ext == "TIFF":
            tifffile.imwrite(d / f"s1_{name}.{ext}", img[:, :, k])
        else:
            assert cv2.imwrite(str(d / f"s1_{name}.{ext.lower()}"), img[:, :, k])
            (d / f"s1_{name}.{ext.lower()}").rename(d / f"s1_{name}.{ext}")
    np.testing.assert_array_equal(read_sample(d, "s1"), read_sample(tmp_path / "ref", "s1"))
    assert find_image_ids(d) == (["s1"], {}) and check_raw_sample(d, "s1") is None

    # a TIFF original beside the Kaggle PNG of the same stain is the one read
    big = (img[:, :, 0].astype(np.uint16) * 257)
    tifffile.imwrite(d / "s1_red.tif", big)
    assert stain_files(d, "s1")["red"].name == "s1_red.tif"
    # two PNGs (or a PNG and a JPEG) for one stain: refused, both named
    assert cv2.imwrite(str(d / "s1_green.jpg"), img[:, :, 1])
    with pytest.raises(SampleError, match=r"s1_green.jpg and s1_green.png: two files for the green stain"):
        read_sample(d, "s1")
    assert "two files for the green stain" in check_raw_sample(d, "s1")


def test_own_image_ids_in_any_case(tmp_path):
    """Stain suffix and extension in any case (`.Png` and `_Red` were skipped); other extensions and
    other stains alone are not samples; an unsafe Id is listed."""
    for name in ("a_red.png", "B_red.PNG", "c_red.TIF", "d_red.jpeg", "g_red.Png", "h_Red.png", "e_green.png",
                 "bad id_red.png", "f_red.txt"):
        (tmp_path / name).write_bytes(b"")
    ids, skipped = find_image_ids(tmp_path)
    assert ids == ["B", "a", "c", "d", "g", "h"] and list(skipped) == ["bad id_red.png"]


@pytest.mark.parametrize("shape", [(1, 1), (8, 8), (31, 31), (31, 512), (512, 8)])
def test_images_below_the_minimum_side_are_refused_by_name(tmp_path, shape):
    """1 px and 8 px images were predicted: a side below MIN_SIDE (either side, in every reader: the
    pixels' and the headers' check before a folder is predicted) is one line naming the red file."""
    from hpa.data.images import MIN_SIDE
    from hpa.prediction.inference import check_raw_sample

    for c in COLORS:
        cv2.imwrite(str(tmp_path / f"s_{c}.png"), np.full(shape, 100, np.uint8))
    h, w = shape
    says = f"s_red.png: {w} x {h} px is smaller than the minimum side of {MIN_SIDE} px"
    with pytest.raises(SampleError, match=says):
        read_sample(tmp_path, "s")
    assert says in check_raw_sample(tmp_path, "s")


@pytest.mark.parametrize("shape", [(32, 32), (32, 48), (64, 64), (128, 128)])
def test_images_at_the_minimum_side_and_the_demos_sides_are_read(tmp_path, shape):
    from hpa.prediction.inference import check_raw_sample

    for c in COLORS:
        cv2.imwrite(str(tmp_path / f"s_{c}.png"), np.full(shape, 100, np.uint8))
    assert read_sample(tmp_path, "s").shape == (*shape, 4)
    assert check_raw_sample(tmp_path, "s") is None
