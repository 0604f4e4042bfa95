"""A real-layout dataset built from the real samples (Kaggle 512 px PNGs, full-size 2048 and 3072 px
images, HPAv18-style RGB JPEGs in external/, a near-duplicate planted across train and external)
and ImageNet-shaped weight caches of the paper recipe's archs, for the recipe's smoke and plan tests."""

import cv2
import numpy as np
import pandas as pd
import timm
import torch
import yaml
from safetensors.torch import save_file

from conftest import ROOT
from hpa.data.images import read_sample, write_sample_png
from hpa.data.labels import COLORS


def write_hpav18_jpegs(directory, sid, img):
    """HPAv18 stores each stain as an RGB JPEG whose colour carries it (yellow = red + green)."""
    directory.mkdir(parents=True, exist_ok=True)
    for k, color in enumerate(COLORS):
        rgb = np.zeros(img.shape[:2] + (3,), np.uint8)
        planes = {"red": [0], "green": [1], "blue": [2], "yellow": [0, 1]}[color]
        for p in planes:
            rgb[:, :, p] = img[:, :, k]
        cv2.imwrite(str(directory / f"{sid}_{color}.jpg"), rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])


def build_dataset(real_samples, d):
    images, rows = real_samples
    by_size = {}
    for sid, target, size in rows:
        by_size.setdefault(size.split("x")[0], []).append((sid, target))
    s512, s2048, s3072 = by_size["512"][0], by_size["2048"], by_size["3072"][0]
    train = [s512, *s2048[:3], s3072]
    external = [(f"1000{k}_1_A{k}_1", t, read_sample(images, sid)) for k, (sid, t) in enumerate(s2048[3:5])]
    planted = ("99999_1_A1_1", train[1][1], read_sample(images, train[1][0]))  # a twin of a train sample
    for sid, _ in train:
        for c in COLORS:
            (d / "train").mkdir(parents=True, exist_ok=True)
            (d / "train" / f"{sid}_{c}.png").write_bytes((images / f"{sid}_{c}.png").read_bytes())
    for sid, _, img in [*external, planted]:
        write_hpav18_jpegs(d / "external", sid, img)
    test = [("test-2048", read_sample(images, s2048[5][0])), ("test-512", read_sample(images, s512[0]))]
    for sid, img in test:
        write_sample_png(d / "test", sid, img)
    pd.DataFrame(train, columns=["Id", "Target"]).to_csv(d / "train.csv", index=False)
    pd.DataFrame([(i, t) for i, t, _ in [*external, planted]], columns=["Id", "Target"]).to_csv(
        d / "external.csv", index=False)
    pd.DataFrame({"Id": [i for i, _ in test], "Predicted": "0"}).to_csv(d / "sample_submission.csv", index=False)
    return train, planted[0], s3072[0]


def build_caches(root) -> dict[str, str]:
    """Random 3-channel ImageNet-shaped weights of every paper arch, in the HF and torch hub caches."""
    recipe = yaml.safe_load((ROOT / "configs" / "recipes" / "paper.yaml").read_text())
    from hpa import models

    where = {}
    for arch in sorted({m["arch"] for m in recipe["members"]}):
        name = models.builder(arch).timm_name
        cfg = timm.models.get_pretrained_cfg(name)
        state = {k: v.contiguous() for k, v in timm.create_model(name, num_classes=1000).state_dict().items()}
        if cfg.hf_hub_id:
            repo = root / "hf" / f"models--{cfg.hf_hub_id.replace('/', '--')}"
            (repo / "refs").mkdir(parents=True)
            (repo / "refs" / "main").write_text("b" * 40)
            (repo / "snapshots" / ("b" * 40)).mkdir(parents=True)
            save_file(state, str(repo / "snapshots" / ("b" * 40) / "model.safetensors"))
            where[arch] = str(repo)
        else:
            target = root / "torch" / "hub" / "checkpoints" / cfg.url.rsplit("/", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, target)
            where[arch] = str(target)
    return where
