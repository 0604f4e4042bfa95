"""Frozen-encoder embeddings: every sample of a dataset (or a folder of own images) through a
pretrained encoder once, with the dihedral TTA views, into the dataset's layout
(`embeddings/<encoder>_<size>/`, hpa.data.layout). What is stored per view is exactly what the paper's
head reads in a fine-tuned network (`model.features`: ACP of the feature map, and a ViT's class
token), so a head trained on it (hpa.training.frozen) is the paper's head on a frozen encoder.

Resumable and interrupt-safe: a split is embedded in chunks of CHUNK samples, each written
atomically to `<split>.parts/`; a re-run skips finished chunks, then finished splits. The store's
`provenance.json` records the encoder (arch, weights, the sha256 of its tensors), the side, the
views, the precision and the toolkit version; a store of other settings is refused, never mixed, and
one written by another toolkit version is embedded again (it is a cache, and a version may read or
resize images differently). Each split records its Ids and its sources (every file's name, size and
time), so a split of other images, or of the same Ids prepared again, is embedded again too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from hpa.core.atomic import atomic_outputs, atomic_save_npy, atomic_write_text, csv_text
from hpa.core.digests import ids_sha256
from hpa.data import layout
from hpa.data.arrays import read_prepared
from hpa.errors import ConfigError, RunError

CHUNK = 512
VERSION = 1  # of the store's format


@dataclass(frozen=True)
class Encoder:
    """What an embedding is made with; its `key` names the store."""
    arch: str
    pretrained: str | None
    size: int
    views: tuple[str, ...]
    amp: str = "off"
    accept_licence: bool = False

    @classmethod
    def named(cls, pretrained: str, *, arch: str | None = None, size: int, tta: str = "8", amp: str = "off",
              accept_licence: bool = False) -> Encoder:
        """An encoder from user input: named HPA weights bring their arch (another --arch is refused),
        other weights (imagenet, none, a file) need `arch`; `tta` a count 1..8 or names."""
        from hpa.core.values import count
        from hpa.models import hpa_weights
        from hpa.models.pretrained import Pretrained
        from hpa.prediction.inference import parse_tta

        if Pretrained.parse(pretrained).kind == "named":
            own = hpa_weights.source(pretrained).arch
            if arch and arch != own:
                raise ConfigError(f"--arch {arch}: the {pretrained} weights are a {own} encoder")
            arch = own
        if not arch:
            raise ConfigError("--arch: required unless --pretrained names HPA weights")
        return cls(arch, pretrained, count("--size", size, 8), parse_tta(tta), amp, accept_licence)

    @property
    def key(self) -> str:
        from hpa.models.pretrained import Pretrained

        return re.sub(r"[^A-Za-z0-9._-]", "-", Pretrained.parse(self.pretrained).tag(self.arch))


def encoder_settings(enc: Encoder) -> dict:
    """The arch's model settings for these weights (a named HPA weight set brings its own)."""
    from hpa.config import load_arch_config

    cfg = load_arch_config(enc.arch, pretrained=enc.pretrained or "none", accept_licence=enc.accept_licence)
    return dict(cfg.model)


def build_encoder(enc: Encoder, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The network with its pretrained encoder, frozen, in eval mode; and its model settings."""
    from hpa.models import build_model

    settings = encoder_settings(enc)
    torch.manual_seed(0)  # a random-init encoder (smoke runs) is the same one every time
    model = build_model(enc.arch, pretrained=enc.pretrained or "none", **settings)
    if not hasattr(model, "features"):
        raise ConfigError(f"--arch {enc.arch}: has no pooled features to embed (a CNN or ViT of the registry)")
    model.to(device).eval().requires_grad_(False)
    return model, settings


def encoder_sha256(model: torch.nn.Module) -> str:
    """The identity of the weights that make the embeddings: their bytes, in name order."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        if k.startswith("encoder."):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Images(Dataset):
    """Whole images at `size` x `size`, in [0, 1]: from a prepared store (one per sample), or raw
    files of a folder (padded to square, then resized)."""

    def __init__(self, ids: list[str], size: int, stores: list[Path] | None = None, raw_dir: Path | None = None):
        self.ids, self.size, self.stores, self.raw_dir = ids, size, stores, raw_dir

    def __len__(self) -> int:
        return len(self.ids)

    def sources_sha256(self) -> str:
        """What the images are read from, by name, size and modification time of every file: a sample
        prepared again with other pixels, or another folder's images under the same Ids, differ."""
        from hpa.data.images import stain_files

        if self.stores is not None:
            paths = [layout.prepared_path(s, i) for s, i in zip(self.stores, self.ids)]
        else:
            paths = [p for i in self.ids for p in stain_files(self.raw_dir, i).values()]
        stats = []
        for p in paths:
            st = os.stat(p)
            stats.append(f"{os.path.abspath(p)}\t{st.st_size}\t{st.st_mtime_ns}")
        return ids_sha256(stats)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.stores is not None:
            img = read_prepared(self.stores[i], self.ids[i])
        else:
            from hpa.data.images import read_sample
            from hpa.data.resolution import pad_to_square

            img = pad_to_square(read_sample(self.raw_dir, self.ids[i]))
        if img.shape[0] != self.size:
            img = cv2.resize(img, (self.size, self.size),
                             interpolation=cv2.INTER_AREA if img.shape[0] > self.size else cv2.INTER_LINEAR)
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)


@torch.no_grad()
def embed_batch(model: torch.nn.Module, x: torch.Tensor, views: Sequence[str], amp: str) -> torch.Tensor:
    """(N, views, D) float32 features of a batch under each dihedral view."""
    from hpa.core.runtime import autocast
    from hpa.prediction.inference import dihedral

    out = []
    for name in views:
        with autocast(x.device, amp):
            out.append(model.features(dihedral(x, name)).float())
    return torch.stack(out, 1)


def _embed_images(model: torch.nn.Module, images: Images, enc: Encoder, parts: Path, *, batch_size: int,
                 device: torch.device, workers: int, desc: str) -> list[Path]:
    """Every image through the encoder, a chunk of CHUNK samples per part file (written
    atomically; existing parts are kept): returns the part files in order."""
    from torch.utils.data import Subset

    from hpa.core.runtime import loader_processes, progress

    parts.mkdir(parents=True, exist_ok=True)
    n = len(images)
    files = [layout.embedding_part(parts, k) for k in range(0, n, CHUNK)]
    todo = [k for k, f in enumerate(files) if not f.is_file()]
    bar = progress(total=n, initial=n - sum(min(CHUNK, n - k * CHUNK) for k in todo), desc=desc, unit="img")
    for k in todo:
        idx = list(range(k * CHUNK, min(n, (k + 1) * CHUNK)))
        chunk = []
        for x in DataLoader(Subset(images, idx), batch_size=batch_size, **loader_processes(workers, images)):
            chunk.append(embed_batch(model, x.to(device), enc.views, enc.amp).cpu().numpy().astype(np.float16))
            bar.update(len(x))
        atomic_save_npy(files[k], np.concatenate(chunk))
    bar.close()
    return files


def _identity(enc: Encoder, model: torch.nn.Module, settings: dict) -> dict:
    from hpa.prediction.bundle import toolkit_version

    return {"format": VERSION, "encoder": enc.key, "arch": enc.arch, "pretrained": enc.pretrained,
            "model": settings, "encoder_sha256": encoder_sha256(model), "size": enc.size, "views": list(enc.views),
            "amp": enc.amp, "toolkit": toolkit_version()}


def read_provenance(store: Path) -> dict:
    """A store's provenance.json (the one reader): a mapping with its splits, or one line naming it."""
    path = layout.embedding_provenance(store)
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: not found; {store} is not an embedding store (embed.py writes one)") from None
    except (OSError, ValueError) as e:  # a folder in its place, a file cut short, not JSON
        raise RunError(f"{path}: unreadable ({' '.join(str(e).split())[:120]}); delete {store} to embed again") \
            from None
    if not isinstance(saved, dict) or not isinstance(saved.get("splits"), dict):
        raise RunError(f"{path}: not an embedding store's provenance (no splits); delete {store} to embed again")
    return saved


def open_store(store: Path, identity: dict, echo=print) -> dict:
    """The store's provenance, created with `identity` or checked against it. A store is a cache of
    what an encoder makes of the images: made with another encoder or other settings it is refused
    (one line naming both), never mixed; made by another toolkit version (whose image reading or
    resizing may differ) or in another store format, its splits are embedded again."""
    path = layout.embedding_provenance(store)
    if path.exists():
        saved = read_provenance(store)
        diff = [k for k in identity if k not in ("toolkit", "format") and saved.get(k) != identity[k]]
        if diff:
            raise RunError(f"{store}: holds embeddings made with other {', '.join(diff)} "
                           f"({saved.get(diff[0])!r} vs {identity[diff[0]]!r}); delete it to embed again")
        stale = [k for k in ("toolkit", "format") if saved.get(k) != identity[k]]
        if not stale:
            return saved
        echo(f"note: {store} was embedded by {stale[0]} {saved.get(stale[0])!r}, this is {identity[stale[0]]!r}; "
             f"its splits ({', '.join(saved['splits']) or 'none'}) are embedded again")
    saved = {**identity, "splits": {}}
    store.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(saved, indent=1))
    return saved


def _embed_split(model: torch.nn.Module, store: Path, split: str, images: Images, enc: Encoder, *,
                batch_size: int, device: torch.device, workers: int, echo) -> Path:
    """One split (the Ids of `images`) into `<split>.npy` + `<split>_ids.csv` (skipped when already
    there for these Ids)."""
    ids = images.ids
    files = layout.embedding_files(store, split)
    prov_path = layout.embedding_provenance(store)
    prov = read_provenance(store)
    want = {"n": len(ids), "ids_sha256": ids_sha256(ids), "sources_sha256": images.sources_sha256()}
    had = prov["splits"].get(split)
    if had == want and files["array"].is_file():
        echo(f"embeddings of {split} ({len(ids)}) are up to date in {store}")
        return files["array"]
    if had is not None:
        echo(f"note: the embeddings of {split} in {store} were made from other images ({had['n']} samples) or "
             "other versions of them; they are made again")
    owner = layout.embedding_parts_owner(files["parts"])
    # chunks of another toolkit version or store format are not reused
    made_by = json.dumps({**want, "toolkit": prov.get("toolkit"), "format": prov.get("format")})
    if files["parts"].is_dir() and (not owner.is_file() or owner.read_text() != made_by):
        shutil.rmtree(files["parts"])  # chunks of an interrupted run over other images: never mixed in
    files["parts"].mkdir(parents=True, exist_ok=True)
    atomic_write_text(owner, made_by)
    echo(f"== embed {split}: {len(ids)} images x {len(enc.views)} views with {enc.key} at {enc.size} px")
    parts = _embed_images(model, images, enc, files["parts"], batch_size=batch_size, device=device, workers=workers,
                         desc=f"embed {split}")
    first = np.load(parts[0], mmap_mode="r")
    with atomic_outputs() as tmp:
        out = np.lib.format.open_memmap(tmp(files["array"]), mode="w+", dtype=np.float16,
                                        shape=(len(ids), *first.shape[1:]))
        for k, p in enumerate(parts):
            a = np.load(p)
            out[k * CHUNK: k * CHUNK + len(a)] = a
        out.flush()
        del out
        tmp(files["ids"]).write_text(csv_text(pd.DataFrame({"Id": ids})))
    prov["splits"][split] = want
    atomic_write_text(prov_path, json.dumps(prov, indent=1))
    shutil.rmtree(files["parts"], ignore_errors=True)
    return files["array"]


def embed_dataset(data_dir: Path, enc: Encoder, *, splits: Sequence[str] | None = None, batch_size: int = 32,
                  device: torch.device, workers: int = 0, echo=print) -> Path:
    """Every present split (train, external, test) of a prepared dataset; returns the store."""
    from hpa.data.labels import read_ids

    data_dir = Path(data_dir)
    splits = list(splits or layout.present_splits(data_dir))
    for split in splits:  # before the encoder (and its weights) is loaded
        prepared = layout.prepared_dir(data_dir, enc.size, split)
        if not prepared.is_dir():
            raise ConfigError(f"{prepared}: not prepared; run input_prep/prepare.py --data-dir {data_dir} "
                              f"--size {enc.size} first")
    model, settings = build_encoder(enc, device)
    store = layout.embeddings_dir(data_dir, enc.key, enc.size)
    open_store(store, _identity(enc, model, settings), echo)
    for split in splits:
        prepared = layout.prepared_dir(data_dir, enc.size, split)
        ids = read_ids(layout.split_table(data_dir, split))
        _embed_split(model, store, split, Images(ids, enc.size, stores=[prepared] * len(ids)), enc,
                    batch_size=batch_size, device=device, workers=workers, echo=echo)
    return store


def embed_folder(images_dir: Path, out_dir: Path, enc: Encoder, *, batch_size: int = 32, device: torch.device,
                 workers: int = 0, echo=print) -> Path:
    """A folder of own images (`<Id>_red.png` ...) into `<out_dir>/<encoder>_<size>/images.npy`."""
    from hpa.prediction.inference import check_raw_sample, find_image_ids

    ids, skipped = find_image_ids(Path(images_dir))
    bad = {i: r for i in ids if (r := check_raw_sample(Path(images_dir), i))}
    for name, why in {**skipped, **bad}.items():
        echo(f"skipped {name}: {why}")
    ids = [i for i in ids if i not in bad]
    if not ids:
        first = next(iter({**skipped, **bad}.values()), "")
        raise ConfigError(f"--images {images_dir}: no readable <Id>_red/green/blue/yellow images"
                          + (f" ({len(skipped) + len(bad)} skipped, the first: {first})" if first else ""))
    model, settings = build_encoder(enc, device)
    store = layout.embedding_store(Path(out_dir), enc.key, enc.size)
    open_store(store, _identity(enc, model, settings), echo)
    return _embed_split(model, store, "images", Images(ids, enc.size, raw_dir=Path(images_dir)), enc,
                       batch_size=batch_size, device=device, workers=workers, echo=echo)


def read_embeddings(store: Path, split: str) -> tuple[list[str], np.ndarray]:
    """(Ids, N x views x D float16 array, memory-mapped) of one embedded split."""
    files = layout.embedding_files(store, split)
    if not files["array"].is_file():
        raise RunError(f"{files['array']}: not embedded; run embed.py first")
    ids = pd.read_csv(files["ids"], dtype=str)["Id"].tolist()
    arr = np.load(files["array"], mmap_mode="r")
    if len(arr) != len(ids):
        raise RunError(f"{files['array']}: {len(arr)} rows for {len(ids)} Ids in {files['ids']}; delete both and "
                       "embed again")
    return ids, arr
