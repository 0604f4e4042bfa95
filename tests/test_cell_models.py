"""Cells cut and predicted by published networks, from files built here in their publishers' forms
and served from 127.0.0.1 (tests/weights_server.py):

- the HPA's segmentation U-Nets (CellProfiling/HPA-Cell-Segmentation, Zenodo 4665863): whole
  pickled `pytorch_zoo.unet.DPNUnet` models (tests/publishers.py `zoo_dpn_unet` rebuilds the
  structure of haoxusci/pytorch_zoo), read by the restricted unpickler and mapped strictly onto the
  toolkit's U-Net, whose output must equal the publisher's network;
- the 2021 winner's cell classifier (BioImage Model Zoo, Zenodo 5910854 v6539073): a TorchScript
  with its input and outputs (4 x 128 x 128 in 0-255; 19 class scores and a 2048-d feature),
  run on crops made here as the Model Zoo's HPA use case makes them (bioimage-io/use-cases
  `case3/hpa_app.py`: the cell's box, 0 outside the cell, resized to 128);
- a user's own masks (`--masks`), and the one line each malformed mask gets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from publishers import TINY_DPN, zoo_dpn_unet
from scripts import run_script
from torch import nn

from conftest import assert_one_line_error, cell_by_hand
from hpa import api
from hpa.data.demo import render_cells
from hpa.data.images import read_sample, write_sample_png
from hpa.errors import HPAError, WeightsError
from hpa.models import hpa_weights
from hpa.models.dpn_unet import DPNSpec, load_dpn_unet
from hpa.prediction.hpa_cellseg import label_cells


def zenodo(srv, base, record: str, files: dict[str, bytes]) -> None:
    entries = []
    for key, data in files.items():
        url = f"/api/records/{record}/files/{key}/content"
        srv.files[url] = data
        entries.append({"key": key, "size": len(data), "checksum": f"md5:{hashlib.md5(data).hexdigest()}",
                        "links": {"self": base + url}})
    srv.api[f"/api/records/{record}"] = {"metadata": {"license": {"id": "cc-by-4.0"}}, "files": entries}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "pre-1.6-dataparallel"])
def test_the_unet_from_its_pickled_file_equals_the_publishers_network(tmp_path, legacy):
    ref = zoo_dpn_unet(tmp_path / "n.pth", legacy=legacy, data_parallel=legacy)
    net = load_dpn_unet(tmp_path / "n.pth")
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), ref(x).numpy(), atol=1e-6)
    t = TINY_DPN
    assert net.filters == ref.filters
    from hpa.models.dpn_unet import spec_from_tensors

    assert spec_from_tensors(net.state_dict(), tmp_path) == DPNSpec(t["small"], t["nf"], t["k_r"], t["groups"],
                                                                    t["k_sec"], t["inc_sec"])


class _Makedirs:
    """An object whose unpickling would create a folder, were the pickle's callables run."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return os.makedirs, (self.path,)


def test_nothing_the_pickle_names_is_run(tmp_path):
    target = tmp_path / "made_by_the_pickle"

    def plant(net):
        net.note = _Makedirs(target)

    ref = zoo_dpn_unet(tmp_path / "n.pth", legacy=True, edit=plant)
    net = load_dpn_unet(tmp_path / "n.pth")
    assert not target.exists()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x), ref(x), atol=1e-6)


def _extra(net):
    net.final.add_module("1", nn.Conv2d(3, 3, 1))


def _missing(net):
    net.last_upsample = nn.Identity()


def _shape(net):
    net.bottlenecks[0].seq[0] = nn.Conv2d(net.bottlenecks[0].seq[0].in_channels, 7, 3, padding=1)


@pytest.mark.parametrize("edit, says", [(_extra, "unexpected tensor final.1."),
                                        (_missing, "no tensor for last_upsample.layer.1."),
                                        (_shape, "bottlenecks.0.seq.0.weight has shape")])
def test_the_unet_map_is_strict(tmp_path, edit, says):
    zoo_dpn_unet(tmp_path / "n.pth", edit=edit)
    with pytest.raises(WeightsError) as e:
        load_dpn_unet(tmp_path / "n.pth")
    assert says in str(e.value) and "\n" not in str(e.value)


def test_a_state_dict_is_not_taken_for_a_pickled_network(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "sd.pth")
    with pytest.raises(WeightsError, match="not a whole network saved with torch.save"):
        load_dpn_unet(tmp_path / "sd.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="cannot read a pickled network"):
        load_dpn_unet(tmp_path / "junk.pth")


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_the_labelling_of_constructed_network_maps():
    """Three cells, two of them touching along a border the cell network marks and one cut by the
    field's edge: each is found whole (IoU >= 0.9 against the drawn cell), with its own nucleus, and
    the touching two stay apart; maps with no nucleus give no cells."""
    from scipy import ndimage as ndi

    shape = (420, 560)
    nuc, cell = np.zeros(shape + (3,), np.uint8), np.zeros(shape + (3,), np.uint8)
    truth = np.zeros(shape, np.int32)
    truth[40:220, 30:250], truth[40:220, 250:470], truth[260:420, 150:380] = 1, 2, 3
    centres = [(130, 140), (130, 360), (340, 265)]
    for cy, cx in centres:
        d = _disc(shape, cy, cx, 38)
        nuc[..., 2][d] = 255
        nuc[..., 1][d & ~ndi.binary_erosion(d, iterations=3)] = 255
    cell[..., 2][truth > 0] = 230
    cell[..., 1][40:220, 248:252] = 255  # the border between cells 1 and 2
    lab = label_cells(nuc, cell)
    assert lab.max() == 3
    from hpa.prediction.cell_scoring import _ious

    m, _, _ = _ious(lab, truth)
    assert (m.max(0) >= 0.9).all(), m
    for cy, cx in centres:
        assert lab[cy, cx] > 0
    assert len({lab[cy, cx] for cy, cx in centres}) == 3
    assert lab[-1, 200] > 0  # the cell at the edge reaches it
    nuc[...] = 0
    assert label_cells(nuc, cell).max() == 0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from hpa.config import load_arch_config
    from hpa.models import build_model
    from hpa.prediction.bundle import write_bundle
    from hpa.prediction.ensemble import Ensemble, Member

    root = tmp_path_factory.mktemp("cellmodels")
    torch.manual_seed(0)
    cfg = load_arch_config("tiny_cnn", size=64, fold=0, pretrained="none")
    ens = Ensemble([Member("tiny_cnn_64", 64, [build_model("tiny_cnn", **cfg.model).eval()], ("id",), [64], "off",
                           [0], [cfg], [{}])], "equal", np.ones(1), np.full(28, 0.5))
    b = write_bundle(ens, root / "b", training_data={"labels": {}, "folds_sha256": ""},
                     summary={"oof_macro_f1": 0.1, "oof_macro_f1_at_0.5": 0.1, "oof_rows": 2})
    images, truth = root / "imgs", {}
    for k in range(2):
        img, lab, _ = render_cells([0, 25], 160, np.random.default_rng(20 + k))
        write_sample_png(images, f"f{k}", img)
        truth[f"f{k}"] = lab
    preds = root / "preds.csv"
    api.predict_images(images, preds, bundle=b, report=False, device="cpu")
    return b, images, preds, truth


def _copy_preds(preds, tmp_path):
    out = tmp_path / "out" / "preds.csv"
    out.parent.mkdir(parents=True)
    out.write_bytes(preds.read_bytes())
    return out


def test_the_hpa_segmenter_downloads_both_unets_and_cuts_a_folder(server, bundle, tmp_path):
    """--segmenter hpa: both files fetched once from the record, and each field's mask is the
    labelling of the publisher's networks' maps, computed here from the publisher's own modules
    with its preprocessing (the field at 1/4, reflect-padded by 32 and to a multiple of 32,
    normalised by the DPN mean and scale, softmax, back to the field's size)."""
    srv, base = server
    b, images, preds, _ = bundle
    nets = {}
    files = {}
    for name, seed in (("hpa-cellseg-nuclei", 1), ("hpa-cellseg-cell", 2)):
        f = hpa_weights.SOURCES[name].filename
        nets[name] = zoo_dpn_unet(tmp_path / f, seed=seed)
        files[f] = (tmp_path / f).read_bytes()
    zenodo(srv, base, "4665863", files)
    out = _copy_preds(preds, tmp_path)
    r = run_script("predict_tta.py", "--bundle", b, "--images", images, "--out", out, "--no-report", "--cells",
                   "crops", "--segmenter", "hpa", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sum(1 for m, p, _ in srv.requests if m == "GET" and p.endswith("/content")) == 2

    def maps(net, x):
        h, w = x.shape[:2]
        s = cv2.resize(x, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
        p = cv2.copyMakeBorder(s, 32, 32 - s.shape[0] % 32, 32, 32 - s.shape[1] % 32, cv2.BORDER_REFLECT)
        t = (torch.from_numpy(p.transpose(2, 0, 1).copy())[None] - torch.tensor([124, 117, 104]).view(1, 3, 1, 1)
             / 255) / (1 / (0.0167 * 255))
        with torch.no_grad():
            o = torch.softmax(net(t.float()), 1)[0].numpy().transpose(1, 2, 0)[32:32 + s.shape[0], 32:32 + s.shape[1]]
        return np.clip(np.rint(cv2.resize(o, (w, h), interpolation=cv2.INTER_LINEAR) * 255), 0, 255).astype(np.uint8)

    for sid in ("f0", "f1"):
        f = read_sample(images, sid).astype(np.float32) / 255
        want = label_cells(maps(nets["hpa-cellseg-nuclei"], np.dstack([f[..., 2]] * 3)),
                           maps(nets["hpa-cellseg-cell"], np.dstack([f[..., 0], f[..., 3], f[..., 2]])))
        got = cv2.imread(str(out.with_name("cell_masks") / f"{sid}.png"), cv2.IMREAD_UNCHANGED)
        assert got.shape == f.shape[:2] and np.array_equal(got, want)


class _CellNet(nn.Module):
    """The 2021 cell model's interface: (N, 4, 128, 128) in 0-255 -> (19 class scores, 2048-d feature)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 8, stride=8)
        self.fc, self.feat = nn.Linear(8, 19), nn.Linear(8, 2048)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.conv(x / 255.0)).mean((2, 3))
        return self.fc(h) * 4, self.feat(h)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_the_2021_winners_cell_model_predicts_every_cell(server, bundle, tmp_path, monkeypatch):
    srv, base = server
    b, images, preds, _ = bundle
    torch.manual_seed(3)
    script = torch.jit.script(_CellNet().eval())
    script.save(str(tmp_path / "weights.pt"))
    data = (tmp_path / "weights.pt").read_bytes()
    zenodo(srv, base, "6539073", {"rdf.yaml": b"type: model\n", "weights.pt": data})
    name = "bestfitting-2021-cells"
    out = _copy_preds(preds, tmp_path)
    args = ("predict_tta.py", "--bundle", b, "--images", images, "--out", out, "--no-report", "--cells",
            "bestfitting-2021", "--device", "cpu")
    r = run_script(*args)  # the real file's pinned sha256: this one is refused and not kept
    assert_one_line_error(r, "sha256 differs from the publisher's")
    assert not hpa_weights.cached_path(hpa_weights.SOURCES[name]).exists()
    monkeypatch.setitem(hpa_weights.SOURCES, name, dataclasses.replace(hpa_weights.SOURCES[name],
                                                                       sha256=hashlib.sha256(data).hexdigest()))
    r = run_script(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    cells = pd.read_csv(out.with_name("cells.csv"), dtype={"Id": str})
    assert list(cells.columns[9:]) == [str(k) for k in range(19)]
    sub = pd.read_csv(out.with_name("cell_submission.csv")).set_index("ID")
    for sid in ("f0", "f1"):
        img = read_sample(images, sid)
        lab = cv2.imread(str(out.with_name("cell_masks") / f"{sid}.png"), cv2.IMREAD_UNCHANGED).astype(np.int32)
        mine = cells[cells.Id == sid].set_index("cell")
        assert len(mine) == lab.max() > 0
        for k in range(1, lab.max() + 1):
            box = cell_by_hand(img, lab, k)
            x = cv2.resize(box, (128, 128), interpolation=cv2.INTER_AREA if max(box.shape[:2]) > 128 else
                           cv2.INTER_LINEAR)
            with torch.no_grad():
                want = torch.sigmoid(script(torch.from_numpy(x.transpose(2, 0, 1).copy()).float()[None])[0])[0]
            np.testing.assert_allclose(mine.loc[k].iloc[8:].to_numpy(float), want.numpy(), atol=2e-6)
        words = sub.loc[sid, "PredictionString"].split()
        assert sorted({int(c) for c in words[::3]}) == list(range(19))  # its own 19 classes, as the 2021 ones


def _write_masks(folder, masks: dict[str, np.ndarray], ext: str = "png"):
    folder.mkdir(exist_ok=True)
    for sid, m in masks.items():
        cv2.imwrite(str(folder / f"{sid}.{ext}"), m)
    return folder


def test_own_masks_are_the_cells(bundle, tmp_path):
    """A 16-bit PNG and an 8-bit TIFF (upper-case extension) are the cells as they are; a 32-bit mask
    numbered with gaps and past 65535 is renumbered 1..n in the order of its labels."""
    b, images, preds, truth = bundle
    masks = _write_masks(tmp_path / "m", {"f0": truth["f0"].astype(np.uint16)})
    cv2.imwrite(str(masks / "f1.TIF"), truth["f1"].astype(np.uint8))
    out = _copy_preds(preds, tmp_path)
    api.predict_cells(images, out, bundle=b, masks=masks, method="crops", device="cpu")
    for sid in ("f0", "f1"):
        got = cv2.imread(str(out.with_name("cell_masks") / f"{sid}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(got, truth[sid])
    (masks / "f1.TIF").unlink()
    gappy = np.where(truth["f1"] > 0, truth["f1"] * 10 + 69990, 0).astype(np.int32)
    cv2.imwrite(str(masks / "f1.tif"), gappy)
    out2 = _copy_preds(preds, tmp_path / "again")
    api.predict_cells(images, out2, bundle=b, masks=masks, method="crops", device="cpu")
    got = cv2.imread(str(out2.with_name("cell_masks") / "f1.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(got, truth["f1"])  # the drawn labels are 1..n in order, so renumbering restores them


@pytest.mark.parametrize("bad, says", [
    ("colour", "a colour image, not a label mask"),
    ("size", "px, the field is 160x160"),
    ("fraction", "holds fractional values"),
    ("missing", "no mask for f1"),
    ("unreadable", "not a readable image"),
    ("two", "2 masks for f1 (f1.png, f1.tif)")])
def test_a_malformed_mask_is_one_line_naming_it(bundle, tmp_path, bad, says):
    b, images, preds, truth = bundle
    masks = _write_masks(tmp_path / "m", {"f0": truth["f0"].astype(np.uint16)})
    m = truth["f1"]
    if bad == "colour":
        rgb = np.dstack([m, m, m]).astype(np.uint8)
        rgb[..., 1] = (m * 37) % 255
        cv2.imwrite(str(masks / "f1.png"), rgb)
    elif bad == "size":
        cv2.imwrite(str(masks / "f1.png"), m[:100].astype(np.uint16))
    elif bad == "fraction":
        cv2.imwrite(str(masks / "f1.tif"), m.astype(np.float32) + 0.5)
    elif bad == "two":
        cv2.imwrite(str(masks / "f1.png"), m.astype(np.uint16))
        cv2.imwrite(str(masks / "f1.tif"), m.astype(np.uint16))
    elif bad == "unreadable":
        (masks / "f1.png").write_bytes(b"\x89PNG broken")
    out = _copy_preds(preds, tmp_path)
    with pytest.raises(HPAError) as e:
        api.predict_cells(images, out, bundle=b, masks=masks, method="crops", device="cpu")
    assert says in str(e.value) and "f1" in str(e.value) and "\n" not in str(e.value)
    assert not out.with_name("cells.csv").exists()  # nothing half-written


def test_mask_flags_mean_one_thing(bundle, tmp_path):
    b, images, preds, _ = bundle
    r = run_script("predict_tta.py", "--bundle", b, "--images", images, "--masks", tmp_path)
    assert r.returncode != 0 and "only with --cells" in r.stderr
    r = run_script("predict_tta.py", "--bundle", b, "--images", images, "--cells", "--masks", tmp_path,
                   "--segmenter", "hpa")
    assert r.returncode != 0 and "the masks are the cells" in r.stderr


def test_offline_the_cell_model_says_where_to_get_it_and_a_wrong_file_put_there_is_refused(bundle, tmp_path,
                                                                                             monkeypatch):
    monkeypatch.setenv("HPA_WEIGHTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    b, images, preds, _ = bundle
    out = _copy_preds(preds, tmp_path)
    args = ("predict_tta.py", "--bundle", b, "--images", images, "--out", out, "--no-report", "--cells",
            "bestfitting-2021")
    w = hpa_weights.SOURCES["bestfitting-2021-cells"]
    line = assert_one_line_error(run_script(*args), "records/6539073", str(hpa_weights.cached_path(w)))
    assert "HF_HUB_OFFLINE" in line
    hpa_weights.cached_path(w).parent.mkdir(parents=True)
    hpa_weights.cached_path(w).write_bytes(b"something else")
    assert_one_line_error(run_script(*args), "not the publisher's file")
    # the HPA segmenter's two files, both named at once
    assert_one_line_error(run_script(*args[:-1], "crops", "--segmenter", "hpa"), "dpn_unet_nuclei_v1.pth",
                          "dpn_unet_cell_3ch_v1.pth")


def test_the_cell_stage_is_checked_before_any_image_is_predicted(bundle, tmp_path):
    """predict_tta.py --cells: a bad mask folder, an --out the cell outputs would replace, and a
    report page of the user's own stop the command before anything is written."""
    b, images, _, truth = bundle
    masks = _write_masks(tmp_path / "m", {"f0": truth["f0"].astype(np.uint16)})  # none for f1
    out = tmp_path / "o" / "preds.csv"
    r = run_script("predict_tta.py", "--bundle", b, "--images", images, "--out", out, "--cells", "--masks", masks)
    assert_one_line_error(r, "no mask for f1")
    assert not out.parent.exists()
    r = run_script("predict_tta.py", "--bundle", b, "--images", images, "--out", tmp_path / "o" / "cells.csv",
                   "--cells")
    assert_one_line_error(r, "cells.csv")
    assert not (tmp_path / "o").exists()
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "report.html").write_text("<html>my notes</html>")
    r = run_script("predict_tta.py", "--bundle", b, "--images", images, "--out", out, "--cells", "--no-report")
    assert_one_line_error(r, "not a report page this toolkit wrote")
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["report.html"]


def test_a_run_without_cells_notes_the_earlier_cells_and_a_run_with_them_does_not(bundle, tmp_path):
    b, images, _, _ = bundle
    out = tmp_path / "o" / "preds.csv"
    args = ("predict_tta.py", "--bundle", b, "--images", images, "--out", out, "--no-report", "--device", "cpu")
    r = run_script(*args, "--cells", "crops")
    assert r.returncode == 0 and "note:" not in r.stdout, r.stderr[-2000:]
    r = run_script(*args, "--cells", "crops")  # renewed: nothing stale
    assert r.returncode == 0 and "note:" not in r.stdout
    r = run_script(*args)
    assert r.returncode == 0 and "note: cells.csv, cell_submission.csv, cell_masks beside preds.csv" in r.stdout
