"""Published trained models by name (hpa.prediction.published): the 2018 winner's DenseNet121.

The checkpoint is built here in its publisher's layout from the publisher's module structure:
CellProfiling/densenet `predict/models.py`, `DensenetClass(large=True)` (what `predict_d121.py` runs
as `class_densenet121_large_dropout`) wraps a torchvision DenseNet121 as `backbone`, widens its
first convolution to 4 inputs, and registers the backbone's feature modules a second time as the
stages `conv1`, `encoder2` ... `encoder5`, so its state dict holds every encoder tensor twice; its
training code saves `{save_dir, state_dict, best_epoch, epoch, best_score}`. `PublisherNet` below
rebuilds that structure (written for this test) and is the independent reference forward pass:
the publisher's normalisation, extra max-pool, ReLU after norm5, [avg, max] pooling, BatchNorm -
Linear - ReLU - BatchNorm - Linear head. Its input is prepared as the publisher's `dataset.py`
does: each stain read as 8-bit grey, resized to 1536 and then 1024 (bilinear), divided by 255.
The file is served from 127.0.0.1 as a GitHub release asset (tests/weights_server.py).
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from scripts import run_script
from torch import nn
from torch.nn import functional as F

from conftest import assert_one_line_error, cell_by_hand
from hpa.errors import WeightsError
from hpa.models import build_model, hpa_weights
from hpa.models.weight_layouts import load_published_cnn

NAME = "bestfitting-2018"
W = hpa_weights.SOURCES[NAME]
MEAN = [0.074598, 0.050630, 0.050891, 0.076287]  # the publisher's, CellProfiling/densenet predict/models.py
STD = [0.122813, 0.085745, 0.129882, 0.119411]
COLORS = ("red", "green", "blue", "yellow")


class PublisherNet(nn.Module):
    """The publisher's DenseNet121 (large variant), in its module structure and key names."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = torchvision.models.densenet121()
        w = self.backbone.features.conv0.weight
        self.backbone.features.conv0 = nn.Conv2d(4, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.backbone.features.conv0.weight = nn.Parameter(torch.cat((w, w[:, :1]), 1))
        f = self.backbone.features
        self.conv1 = nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0)
        self.encoder2 = nn.Sequential(f.denseblock1)
        self.encoder3 = nn.Sequential(f.transition1, f.denseblock2)
        self.encoder4 = nn.Sequential(f.transition2, f.denseblock3)
        self.encoder5 = nn.Sequential(f.transition3, f.denseblock4, f.norm5)
        self.maxpool = nn.MaxPool2d(2, stride=2)
        self.bn1, self.fc1 = nn.BatchNorm1d(2048), nn.Linear(2048, 1024)
        self.bn2, self.relu = nn.BatchNorm1d(1024), nn.ReLU(inplace=True)
        self.logit = nn.Linear(1024, 28)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # eval mode: dropout is the identity
        x = (x - torch.tensor(MEAN).view(1, 4, 1, 1)) / torch.tensor(STD).view(1, 4, 1, 1)
        x = self.maxpool(self.conv1(x))
        e5 = F.relu(self.encoder5(self.encoder4(self.encoder3(self.encoder2(x)))))
        x = torch.cat((e5.mean((2, 3)), e5.amax((2, 3))), 1)
        x = self.bn2(self.relu(self.fc1(self.bn1(x))))
        return self.logit(x)


def publisher_model(seed: int = 0, green_only: bool = False) -> PublisherNet:
    """Random weights, with BatchNorm statistics and affine terms away from their defaults (so a
    buffer mapped wrongly changes the output)."""
    torch.manual_seed(seed)
    net = PublisherNet()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.num_batches_tracked.fill_(1000)
    with torch.no_grad():
        net.logit.weight.mul_(4)  # spread the probabilities out of the middle
        if green_only:  # the stem reads the protein stain alone
            net.backbone.features.conv0.weight[:, [0, 2, 3]] = 0
    return net.eval()


def save_publisher_checkpoint(net: PublisherNet, path: Path) -> bytes:
    torch.save({"save_dir": "/data/models/fold0", "state_dict": net.state_dict(), "best_epoch": 27, "epoch": 30,
                "best_score": np.float64(0.61)}, path)  # a numpy score is unpickled as an inert placeholder
    return path.read_bytes()


def serve_release(srv, base: str, data: bytes, digest: str | None = None) -> None:
    """GitHub's release API for CellProfiling/densenet v0.1.0 and its asset."""
    repo, tag = W.github_release.split("@")
    url = f"{base}/{repo}/releases/download/{tag}/{W.filename}"
    srv.files[url.removeprefix(base)] = data
    srv.api[f"/repos/{repo}/releases/tags/{tag}"] = {"tag_name": tag, "assets": [
        {"name": "README.txt", "size": 5, "browser_download_url": f"{base}/x"},
        {"name": W.filename, "size": len(data), "browser_download_url": url,
         "digest": digest or f"sha256:{hashlib.sha256(data).hexdigest()}"}]}


def write_images(folder: Path, n: int, seed: int, side: int = 96) -> list[str]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"s{seed}_{k}" for k in range(n)]
    for sid in ids:
        for c in COLORS:
            cv2.imwrite(str(folder / f"{sid}_{c}.png"), rng.integers(0, 256, (side, side), np.uint8))
    return ids


def publisher_input(folder: Path, sid: str) -> torch.Tensor:
    """The publisher's loader: each stain as 8-bit grey, 1536 then 1024 px bilinear, / 255."""
    planes = [cv2.imread(str(folder / f"{sid}_{c}.png"), cv2.IMREAD_GRAYSCALE) for c in COLORS]
    img = np.stack(planes, -1)
    for side in (1536, 1024):
        img = cv2.resize(img, (side, side), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


def read_probs(path: Path) -> dict[str, np.ndarray]:
    with open(path) as f:
        return {r["Id"]: np.array([float(r[str(k)]) for k in range(28)]) for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[PublisherNet, bytes]:
    net = publisher_model()
    return net, save_publisher_checkpoint(net, tmp_path_factory.mktemp("ck") / "model.pth")


def test_bundle_by_name_equals_the_publishers_forward_pass(server, checkpoint, tmp_path):
    """predict_tta.py --bundle bestfitting-2018: downloaded from the release (sha256 checked),
    converted once, and its probabilities equal the publisher's network on the publisher's input
    (fp32, one view); the decision rule calls what predict_d121.py's `prob_to_result` calls."""
    srv, base = server
    net, data = checkpoint
    serve_release(srv, base, data)
    images = tmp_path / "images"
    ids = write_images(images, 2, seed=1)
    out = tmp_path / "preds.csv"
    r = run_script("predict_tta.py", "--bundle", NAME, "--images", images, "--out", out, "--no-report")
    assert r.returncode == 0, r.stderr[-2000:]
    got = read_probs(out)
    with torch.no_grad():
        for sid in ids:
            ref = torch.sigmoid(net(publisher_input(images, sid)))[0].numpy()
            assert np.abs(got[sid] - ref).max() < 1e-5, (sid, np.abs(got[sid] - ref).max())
    # the publisher's rule: the top class always, and every class above 0.5
    rows = {r["Id"]: r["predicted"] for r in csv.DictReader(open(out))}
    from hpa.data.labels import CLASS_NAMES

    for sid in ids:
        p = got[sid].copy()
        p[p.argmax()] = 1
        assert rows[sid] == "; ".join(CLASS_NAMES[k] for k in np.flatnonzero(p > 0.5))
    # downloaded once, into the cache, and the bundle records the file it came from
    cached = hpa_weights.cached_path(W)
    assert cached.read_bytes() == data
    assert sum(1 for m, p, _ in srv.requests if m == "GET" and p.endswith(W.filename)) == 1
    config = json.loads((cached.parent / "bundle" / "config.json").read_text())
    assert config["source"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert config["members"][0]["tta"] == ["id"] and config["members"][0]["resize"] == [1536, 1024]
    card = (cached.parent / "bundle" / "README.md").read_text()
    assert "Nature Methods" in card and "CellProfiling/densenet" in card


def test_a_stem_that_reads_only_green_responds_only_to_green(tmp_path):
    """The stain order of the map: weights whose first convolution reads the publisher's channel 1
    (green) alone give equal probabilities when red, blue and yellow change, and others when green does."""
    path = tmp_path / "green.pth"
    save_publisher_checkpoint(publisher_model(seed=2, green_only=True), path)
    net = build_model(W.arch, **W.model_settings()).eval()
    load_published_cnn(net, path, W.layout, head=True)
    x = torch.rand(1, 4, 256, 256)
    others = x.clone()
    others[:, [0, 2, 3]] = torch.rand(1, 3, 256, 256)
    green = x.clone()
    green[:, 1] = torch.rand(256, 256)
    with torch.no_grad():
        a, b, c = (torch.sigmoid(net(v)) for v in (x, others, green))
    assert torch.allclose(a, b, atol=1e-6)
    assert (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("edit, says", [
    (lambda sd: sd.pop("encoder2.0.denselayer1.norm1.weight"), "'backbone.features.denseblock1.denselayer1.norm1"
                                                               ".weight' has no stage copy"),
    (lambda sd: sd["encoder5.2.running_var"].add_(1), "'encoder5.2.running_var' differs from "
                                                       "'backbone.features.norm5.running_var'"),
    (lambda sd: sd.__setitem__("arc_margin_product.weight", torch.zeros(28, 512)), "'arc_margin_product.weight' has "
                                                                                    "no place"),
    (lambda sd: sd.__setitem__("logit.weight", torch.zeros(27, 1024)), "'head.6.weight' has shape (27, 1024)"),
    (lambda sd: [sd.pop(k) for k in [k for k in sd if k.startswith("bn2.")]], "missing from the bestfitting file, "
                                                                              "first 'head.4.weight'"),
])
def test_the_layout_map_is_strict(checkpoint, tmp_path, edit, says):
    net, _ = checkpoint
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    edit(sd)
    path = tmp_path / "edited.pth"
    torch.save({"state_dict": sd, "epoch": 1}, path)
    model = build_model(W.arch, **W.model_settings())
    with pytest.raises(WeightsError) as e:
        load_published_cnn(model, path, W.layout, head=True)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_the_imagenet_classifier_is_named_unused_and_module_prefixes_are_read(checkpoint, tmp_path):
    """torchvision's 1000-way `backbone.classifier` is in the publisher's file and unused; a
    DataParallel `module.` prefix (how predict_d121.py wraps it) is read."""
    net, _ = checkpoint
    sd = net.state_dict()
    assert "backbone.classifier.weight" in sd
    path = tmp_path / "dp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    model = build_model(W.arch, **W.model_settings()).eval()
    load_published_cnn(model, path, W.layout, head=True)
    x = torch.rand(1, 4, 128, 128)
    with torch.no_grad():
        assert torch.allclose(torch.sigmoid(model(x)), torch.sigmoid(net(x)), atol=1e-5)


def test_the_torchvision_0_2_naming_of_his_requirements_is_read(checkpoint, tmp_path):
    """predict/requirements.txt of CellProfiling/densenet pins torchvision 0.2.1, whose dense layers
    name their parts `norm.1`, `relu.1`, `conv.1`, `norm.2`, `conv.2`; a file in that naming maps
    to the same network."""
    import re

    net, _ = checkpoint
    old = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in net.state_dict().items()}
    assert "backbone.features.denseblock1.denselayer1.norm.1.weight" in old
    path = tmp_path / "old.pth"
    torch.save({"state_dict": old}, path)
    model = build_model(W.arch, **W.model_settings()).eval()
    load_published_cnn(model, path, W.layout, head=True)
    x = torch.rand(1, 4, 128, 128)
    with torch.no_grad():
        assert torch.allclose(torch.sigmoid(model(x)), torch.sigmoid(net(x)), atol=1e-5)


def test_a_wrong_digest_is_refused_and_nothing_is_kept(server, checkpoint, tmp_path):
    srv, base = server
    serve_release(srv, base, checkpoint[1], digest="sha256:" + "0" * 64)
    r = run_script("predict_tta.py", "--bundle", NAME, "--images", tmp_path, "--out", tmp_path / "p.csv")
    assert_one_line_error(r, "sha256", "differs from the publisher's")
    assert not hpa_weights.cached_path(W).exists()


def test_offline_without_the_file_says_where_to_get_it_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HPA_WEIGHTS_CACHE", str(tmp_path / "cache"))
    r = run_script("predict_tta.py", "--bundle", NAME, "--images", tmp_path, "--out", tmp_path / "p.csv")
    line = assert_one_line_error(r, "https://github.com/CellProfiling/densenet/releases/download/v0.1.0/",
                                 str(tmp_path / "cache" / NAME / W.filename))
    assert "HF_HUB_OFFLINE" in line


def test_a_file_put_where_the_offline_message_says_is_used(checkpoint, tmp_path, monkeypatch):
    """A checkpoint saved by the publisher's code, put by hand at the cached path, offline: the
    bundle is made from it (no sidecar needed) and predicts as the publisher's network does."""
    monkeypatch.setenv("HPA_WEIGHTS_CACHE", str(tmp_path / "cache"))
    net, data = checkpoint
    dest = hpa_weights.cached_path(W)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(data)
    import hpa

    images = tmp_path / "images"
    (sid,) = write_images(images, 1, seed=3, side=64)
    bundle = hpa.load_bundle(NAME)
    res = bundle.predict_folder(images, tmp_path / "p.csv", report=False)
    got = read_probs(res.predictions)[sid]
    with torch.no_grad():
        ref = torch.sigmoid(net(publisher_input(images, sid)))[0].numpy()
    assert np.abs(got - ref).max() < 1e-5


def test_the_real_samples_go_through_with_a_report(real_samples, tmp_path, monkeypatch):
    """The 8 real HPA samples (512, 2048 and 3072 px) through the published bundle: one row each,
    probabilities equal to the publisher's network on the publisher's input, and report.html with
    a class map of every predicted class. The entry's sides are quartered here (384 then 256) to keep
    the suite fast on 2 cores; the full-side equality is the first test's."""
    import dataclasses

    from hpa.prediction import published

    monkeypatch.setenv("HPA_WEIGHTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(published.PUBLISHED, NAME, dataclasses.replace(published.PUBLISHED[NAME], size=256,
                                                                       resize=(384, 256)))
    net = publisher_model(seed=4)
    with torch.no_grad():
        net.logit.bias.fill_(-3.0)  # a class or two per image: the maps stay few
    data = save_publisher_checkpoint(net, tmp_path / "model.pth")
    dest = hpa_weights.cached_path(W)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(data)
    images, rows = real_samples
    out = tmp_path / "out" / "preds.csv"
    r = run_script("predict_tta.py", "--bundle", NAME, "--images", images, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    got = read_probs(out)
    assert sorted(got) == sorted(sid for sid, _, _ in rows)
    sid = rows[-1][0]  # the 3072 px field, resized through the entry's sides as the publisher's loader does
    planes = [cv2.imread(str(next(images.glob(f"{sid}_{c}.*"))), cv2.IMREAD_GRAYSCALE) for c in COLORS]
    img = np.stack(planes, -1)
    for side in (384, 256):
        img = cv2.resize(img, (side, side), interpolation=cv2.INTER_LINEAR)
    with torch.no_grad():
        ref = torch.sigmoid(net(torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]))[0].numpy()
    assert np.abs(got[sid] - ref).max() < 1e-5
    page = (out.parent / "report.html").read_text()
    assert NAME in page and sid in page
    data = json.loads(page.split('id="data">', 1)[1].split("</script>", 1)[0])
    predicted = sum(len(r["predicted"].split("; ")) for r in csv.DictReader(open(out)))
    assert sum(len(r["maps"]) for r in data["rows"]) == predicted


def test_the_winners_network_under_the_papers_recipe(checkpoint, tmp_path, monkeypatch):
    """--pretrained bestfitting-2018 for the densenet121 arch: the config takes the network's settings
    from the weights' entry (over configs/densenet121.yaml's ImageNet ones), the encoder is the
    publisher's and the head starts untrained unless model.pretrained_head asks for his; a recipe
    member names it in its `set`; another arch is refused."""
    from hpa.config import build_config, load_arch_config, parse_set
    from hpa.errors import ConfigError
    from hpa.pipeline.recipe import Member, member_config

    monkeypatch.setenv("HPA_WEIGHTS_CACHE", str(tmp_path / "cache"))
    net, data = checkpoint
    dest = hpa_weights.cached_path(W)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(data)
    cfg = load_arch_config("densenet121", pretrained=NAME)
    assert cfg.model["variant"] == "bestfitting2018" and cfg.model["normalize"] == "bestfitting2018"
    assert cfg.crop == load_arch_config("densenet121").crop  # a CNN's weights do not fix its training crop
    theirs = net.state_dict()
    for head in (False, True):
        model = build_model("densenet121", pretrained=NAME, **(cfg.model | {"pretrained_head": head}))
        ours = model.state_dict()
        assert torch.equal(ours["encoder.features.denseblock4.denselayer16.conv2.weight"],
                           theirs["backbone.features.denseblock4.denselayer16.conv2.weight"])
        assert torch.equal(ours["head.6.weight"], theirs["logit.weight"]) is head
    member = Member(arch="densenet121", size=768, set={"pretrained": NAME})
    assert member_config(member, tmp_path, 0).model["variant"] == "bestfitting2018"
    with pytest.raises(ConfigError, match="bestfitting-2018 is a densenet121 encoder"):
        build_config([("--set", {"arch": "resnet50", **parse_set([f"pretrained={NAME}"])})])


# ---- SubCell's classifiers -------------------------------------------------------------------------------
# The publisher's layout (CellProfiling/SubCellPortable vit_model.py `ViTPoolClassifier.load_model_dict`):
# the encoder file holds the Hugging Face ViT under `encoder.` and the gated-attention pooler under
# `pool_model.` with each Linear behind a dropout (`attention_v.1`, `attention_u.1`; SubCellPortable
# renames 1. -> 0.); each classifier file is one MLP saved with dropouts between its layers, so its
# Linear layers sit at 0, 3 and 6 (SubCellPortable renames 3. -> 2., 6. -> 4.). tests/publishers.py
# builds the tiny ViT of the same layout.

SUBCELL = "subcell-rybg-mae"
SEEDS = 3


def subcell_files(srv, seed: int = 0) -> tuple[dict, dict, list[dict]]:
    """(ViT tensors, encoder file dict, classifier file dicts) in SubCell's layout, tiny width."""
    from publishers import WIDTH, hf_checkpoint, vit_tensors

    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.05  # noqa: E731
    sd = vit_tensors(4, 448, seed=seed)
    enc = {k: v for k, v in hf_checkpoint(sd).items() if not k.startswith("pool_model.")}
    enc |= {"pool_model.attention_v.1.weight": r(512, WIDTH), "pool_model.attention_v.1.bias": r(512),
            "pool_model.attention_u.1.weight": r(512, WIDTH), "pool_model.attention_u.1.bias": r(512),
            "pool_model.attention.weight": r(2, 512) * 20, "pool_model.attention.bias": r(2)}
    heads = [{"0.weight": r(512, 2 * WIDTH) * 4, "0.bias": r(512), "3.weight": r(256, 512) * 4, "3.bias": r(256),
              "6.weight": r(31, 256) * 8, "6.bias": r(31)} for _ in range(SEEDS)]
    return sd, enc, heads


def subcell_reference(sd: dict, enc: dict, heads: list[dict], x: torch.Tensor) -> torch.Tensor:
    """SubCell's forward from its published tensors: rybg order, min-max over the sample, the ViT,
    gated attention over all tokens, each MLP's sigmoid, averaged."""
    from publishers import reference_forward

    x = x[:, [0, 3, 2, 1]]
    x = (x - x.amin((1, 2, 3), keepdim=True)) / (x.amax((1, 2, 3), keepdim=True) - x.amin((1, 2, 3), keepdim=True)
                                                 + 1e-6)
    t = reference_forward(sd, x, 1e-12, False)
    v = torch.tanh(t @ enc["pool_model.attention_v.1.weight"].T + enc["pool_model.attention_v.1.bias"])
    u = F.gelu(t @ enc["pool_model.attention_u.1.weight"].T + enc["pool_model.attention_u.1.bias"])
    a = torch.softmax((v * u @ enc["pool_model.attention.weight"].T + enc["pool_model.attention.bias"])
                      .transpose(1, 2), -1)
    pooled = torch.bmm(a, t).flatten(1)
    probs = []
    for h in heads:
        z = F.relu(pooled @ h["0.weight"].T + h["0.bias"])
        z = F.relu(z @ h["3.weight"].T + h["3.bias"])
        probs.append(torch.sigmoid(z @ h["6.weight"].T + h["6.bias"]))
    return torch.stack(probs).mean(0)


def serve_subcell(srv, enc: dict, heads: list[dict], tmp_path: Path) -> None:
    from hpa.models import hpa_weights

    for k, data in enumerate([enc] + heads):
        name = SUBCELL if k == 0 else f"{SUBCELL}-mlp{k - 1}"
        path = tmp_path / f"f{k}.pth"
        torch.save(data, path)
        srv.files["/" + hpa_weights.SOURCES[name].s3_key] = path.read_bytes()


@pytest.fixture
def tiny_subcell(monkeypatch):
    """The rybg MAE entry with a tiny ViT of the same layout and 3 heads instead of 10."""
    import dataclasses

    from hpa.prediction import published

    entry = published.PUBLISHED[SUBCELL]
    monkeypatch.setitem(published.PUBLISHED, SUBCELL, dataclasses.replace(
        entry, files=entry.files[:1 + SEEDS], encoder="vit_tiny_patch16_224"))


def test_subcell_bundle_equals_the_publishers_forward_pass(server, tiny_subcell, tmp_path):
    """--bundle subcell-rybg-mae: the encoder and its heads fetched from the bucket (md5 ETags),
    mapped strictly, and the 31 probabilities equal SubCell's forward on the same 448 px input;
    the CSV has 31 columns named by SubCell's classes in the report, and --classes kaggle2018
    writes the Kaggle 28 with the classes SubCell lacks left empty."""
    from hpa.data.class_sets import SUBCELL31
    from hpa.data.images import read_sample

    srv, _ = server
    sd, enc, heads = subcell_files(srv)
    serve_subcell(srv, enc, heads, tmp_path)
    images = tmp_path / "images"
    ids = write_images(images, 2, seed=5, side=448)
    out = tmp_path / "p" / "preds.csv"
    r = run_script("predict_tta.py", "--bundle", SUBCELL, "--images", images, "--out", out, "--no-report")
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out) as f:
        rows = {row["Id"]: row for row in csv.DictReader(f)}
    x = torch.stack([torch.from_numpy(read_sample(images, i).transpose(2, 0, 1).copy()) for i in ids]).float() / 255
    with torch.no_grad():
        ref = subcell_reference(sd, enc, heads, x).numpy()
    got = np.array([[float(rows[i][str(k)]) for k in range(31)] for i in ids])
    assert np.abs(got - ref).max() < 1e-5, np.abs(got - ref).max()
    assert all(n in SUBCELL31 for i in ids for n in rows[i]["predicted"].split("; "))
    mapped = tmp_path / "p" / "kaggle.csv"
    r = run_script("predict_tta.py", "--bundle", SUBCELL, "--images", images, "--out", mapped, "--no-report",
                   "--classes", "kaggle2018")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "left empty: 15 Microtubule ends, 18 Microtubule organizing center, 27 Rods & rings" in r.stdout
    with open(mapped) as f:
        kaggle = {row["Id"]: row for row in csv.DictReader(f)}
    assert float(kaggle[ids[0]]["0"]) == pytest.approx(ref[0][SUBCELL31.index("Nucleoplasm")], abs=1e-5)
    assert kaggle[ids[0]]["15"] == "" and kaggle[ids[0]]["27"] == ""


def test_subcell_on_cell_crops_gives_its_31_classes_and_the_2021_submission(server, tiny_subcell, tmp_path):
    """--bundle subcell-rybg-mae --cells crops: each cell alone (its box, black outside, padded
    square, resized to 448) through SubCell's forward; cells.csv holds SubCell's 31 classes and the
    submission the 2021 19, Nucleoplasm onto Nucleoplasm and Negative onto Negative."""
    from hpa.data.class_sets import HPA2021, SUBCELL31
    from hpa.data.demo import render_cells
    from hpa.data.images import write_sample_png

    srv, _ = server
    sd, enc, heads = subcell_files(srv)
    serve_subcell(srv, enc, heads, tmp_path)
    img, _, _ = render_cells([0], 160, np.random.default_rng(7))
    write_sample_png(tmp_path / "imgs", "c0", img)
    out = tmp_path / "p" / "preds.csv"
    r = run_script("predict_tta.py", "--bundle", SUBCELL, "--images", tmp_path / "imgs", "--out", out, "--no-report",
                   "--cells", "crops")
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out.with_name("cells.csv")) as f:
        cells = list(csv.DictReader(f))
    assert len(cells) >= 2 and [k for k in cells[0] if k.isdigit()] == [str(k) for k in range(31)]
    lab = cv2.imread(str(out.with_name("cell_masks") / "c0.png"), cv2.IMREAD_UNCHANGED).astype(np.int32)
    first = cells[0]
    k = int(first["cell"])
    ys, xs = np.nonzero(lab == k)
    sq = cell_by_hand(img, lab, k, square=True)
    x = torch.from_numpy(cv2.resize(sq, (448, 448), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1).copy())
    with torch.no_grad():
        ref = subcell_reference(sd, enc, heads, x.float()[None] / 255)[0].numpy()
    got = np.array([float(first[str(c)]) for c in range(31)])
    assert np.abs(got - ref).max() < 1e-5
    with open(out.with_name("cell_submission.csv")) as f:
        words = next(csv.DictReader(f))["PredictionString"].split()
    from hpa.prediction.cell_scoring import decode_mask

    conf = {int(c): float(p) for c, p, rle in zip(words[::3], words[1::3], words[2::3])
            if decode_mask(rle, 160, 160)[ys[0], xs[0]]}
    assert conf[HPA2021.index("Nucleoplasm")] == pytest.approx(ref[SUBCELL31.index("Nucleoplasm")], abs=1e-5)
    assert conf[HPA2021.index("Negative")] == pytest.approx(ref[SUBCELL31.index("Negative")], abs=1e-5)


def test_the_class_map_pairs_only_classes_of_the_same_name():
    """Each pair of the table names the same compartment (case aside), each Kaggle class takes at
    most one class of the other set, and every class of the same name is paired."""
    from hpa.data.class_sets import SUBCELL31, TO_KAGGLE2018
    from hpa.data.labels import CLASS_NAMES

    pairs = TO_KAGGLE2018["subcell31"]
    assert all(SUBCELL31[k].lower() == CLASS_NAMES[v].lower() for k, v in pairs.items())
    assert len(set(pairs.values())) == len(pairs)
    same = {i for i, n in enumerate(SUBCELL31) if n.lower() in {c.lower() for c in CLASS_NAMES}}
    assert set(pairs) == same


@pytest.mark.parametrize("edit, says", [
    (lambda enc, heads: enc.pop("pool_model.attention_u.1.bias"), "missing from SubCell's files, first "
                                                                   "'attn_pool.attention_u.bias'"),
    (lambda enc, heads: enc.__setitem__("pool_model.out_proj.weight", torch.zeros(4, 4)),
     "'pool_model.out_proj.weight' is no part"),
    (lambda enc, heads: heads[1].__setitem__("9.weight", torch.zeros(1)), "'9.weight' is no part of SubCell's MLP"),
    (lambda enc, heads: heads[2].__setitem__("6.weight", torch.zeros(28, 256)), "'head.mlps.2.4.weight' has shape "
                                                                                "(28, 256)"),
])
def test_the_subcell_map_is_strict(tmp_path, edit, says):
    from hpa.models.weight_layouts import load_subcell

    _, enc, heads = subcell_files(None, seed=1)
    edit(enc, heads)
    paths = []
    for k, data in enumerate([enc] + heads):
        paths.append(tmp_path / f"f{k}.pth")
        torch.save(data, paths[-1])
    net = build_model("subcell_vit", seeds=SEEDS, encoder="vit_tiny_patch16_224")
    with pytest.raises(WeightsError) as e:
        load_subcell(net, paths[0], paths[1:])
    assert says in str(e.value) and "\n" not in str(e.value)


def test_a_published_bundle_without_a_licence_is_not_packaged(checkpoint, tmp_path, monkeypatch):
    """bestfitting's publisher states no licence, and a bioimage.io package needs an SPDX one: one
    line, no package."""
    import hpa
    from hpa.errors import HPAError
    from hpa.prediction.bioimageio import export_bioimageio

    monkeypatch.setenv("HPA_WEIGHTS_CACHE", str(tmp_path / "cache"))
    net, data = checkpoint
    dest = hpa_weights.cached_path(W)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(data)
    with pytest.raises(HPAError, match="licence 'other' is no SPDX licence identifier"):
        export_bioimageio(hpa.load_bundle(NAME).path, tmp_path / "winner.zip")
    assert not (tmp_path / "winner.zip").exists()


@pytest.mark.slow
def test_a_published_subcell_bundle_as_a_bioimageio_package(server, tiny_subcell, tmp_path, monkeypatch):
    """SubCell's classifier (MIT) as a bioimage.io package: it validates, passes bioimageio.core's
    test_model, names its 31 output channels, and gives the bundle's probabilities on its test image
    (at 224 px here, to keep the suite fast)."""
    import dataclasses
    import zipfile

    from bioimageio.core import test_model
    from bioimageio.spec import load_model_description

    import hpa
    from hpa.data.images import read_sample
    from hpa.prediction import published
    from hpa.prediction.bioimageio import export_bioimageio

    monkeypatch.setitem(published.PUBLISHED, SUBCELL, dataclasses.replace(published.PUBLISHED[SUBCELL], size=224))
    srv, _ = server
    _, enc, heads = subcell_files(srv, seed=2)
    serve_subcell(srv, enc, heads, tmp_path)
    images = tmp_path / "images"
    (sid,) = write_images(images, 1, seed=8, side=224)
    bundle = hpa.load_bundle(SUBCELL)
    pkg = export_bioimageio(bundle.path, tmp_path / "subcell.zip", test_image=read_sample(images, sid))
    descr = load_model_description(pkg)
    assert len(descr.outputs[0].axes[1].channel_names) == 31
    summary = test_model(pkg)
    assert summary.status == "passed", summary.format()
    with zipfile.ZipFile(pkg) as z:
        name = next(n for n in z.namelist() if n.endswith("test_output.npy"))
        z.extract(name, tmp_path / "pkg")
    got = np.load(tmp_path / "pkg" / name).reshape(-1)
    out = bundle.predict_folder(images, tmp_path / "p.csv", report=False).predictions
    with open(out) as f:
        row = next(csv.DictReader(f))
    assert np.abs(got - np.array([float(row[str(k)]) for k in range(31)])).max() < 1e-5
