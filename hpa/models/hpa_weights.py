"""Encoders pretrained on the Human Protein Atlas, by name (`--pretrained dino4cells-hpa-fov`):
where each weight set is published, what it expects of its input, how it is fetched and checked.

Each file is downloaded once, resumably (an interrupted download continues from its `.part` file
with an HTTP Range request), into one cache (`hpa.data.layout.weights_cache()`), and verified before it
is renamed into place: its size and the publisher's checksum (Zenodo's md5 from the record API; an
S3 object's ETag, which is the md5 of a file uploaded in one part; a GitHub release asset's sha256
`digest` from the release API). A sidecar `<file>.json`
records the address, the checks and the licence. Offline without the file, one line names the
address and the path to put it at.

The input each weight set expects (channel order and subset, normalisation, trained side, layer
norm epsilon) is part of its entry and becomes the run's `model` settings (`model_settings`), so
prediction rebuilds the same preprocessing from the run's saved config.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hpa.data import layout
from hpa.errors import ConfigError, WeightsError
from hpa.models.pretrained import offline

CHUNK = 1 << 20


def zenodo_url() -> str:
    return os.environ.get("HPA_ZENODO_URL", "https://zenodo.org")  # the tests point these at 127.0.0.1


def subcell_url() -> str:
    return os.environ.get("HPA_SUBCELL_URL", "https://czi-subcell-public.s3.amazonaws.com")


def github_api_url() -> str:
    return os.environ.get("HPA_GITHUB_API_URL", "https://api.github.com")


@dataclass(frozen=True)
class WeightSource:
    name: str
    arch: str  # the registry arch whose timm encoder the weights map onto
    layout: str  # the publisher's key layout: dino | hf_vit | dinov2 (hpa.models.weight_layouts)
    channels: str  # the stains the encoder reads, in its input order (r g b y = the Kaggle red green blue yellow)
    normalize: str  # self: each image's channels to zero mean, unit std; minmax: each sample to [0, 1]
    img_size: int  # the side the position embeddings were trained at
    ln_eps: float
    licence: str
    source: str  # the page a user reads about them
    s3_key: str | None = None  # the file in SubCell's public bucket
    zenodo_record: str | None = None
    filename: str | None = None
    layerscale: float | None = None  # DINOv2 blocks carry LayerScale (ls1/ls2)
    needs_acceptance: bool = False
    github_release: str | None = None  # owner/repo@tag whose release asset `filename` is
    settings: dict | None = None  # a whole CNN's `model` settings (the ViT ones are made from the fields above)
    pretrainable: bool = True  # False: a part of a published model (a classifier head), no --pretrained
    sha256: str | None = None  # the file's digest as its publisher states it, checked after download

    def model_settings(self) -> dict:
        """The `model` settings a run with these weights gets (hpa.config applies them)."""
        if self.settings is not None:
            return dict(self.settings)
        out = {"normalize": self.normalize, "channels": self.channels, "img_size": self.img_size,
               "ln_eps": self.ln_eps}
        return out | ({"layerscale": self.layerscale} if self.layerscale else {})

    @property
    def fixed_side(self) -> bool:
        """A ViT's weights fix the crop it trains at; a CNN's do not."""
        return self.settings is None

    def where(self) -> str:
        """The address a user downloads the file from by hand."""
        if self.s3_key:
            return f"{subcell_url()}/{self.s3_key}"
        if self.github_release:
            repo, tag = self.github_release.split("@")
            return f"https://github.com/{repo}/releases/download/{tag}/{self.filename}"
        return f"{zenodo_url()}/records/{self.zenodo_record}" + (f" ({self.filename})" if self.filename else
                                                                 " (its .pt or .pth weights file)")


SUBCELL_CHANNELS = {"rybg": "all_channels", "rbg": "MT-DNA-Protein", "ybg": "ER-DNA-Protein", "bg": "DNA-Protein"}
_SUBCELL_VARIANTS = {"mae": "MAE-CellS-ProtS-Pool", "vit": "ViT-ProtS-Pool"}
_SUBCELL_HEADS = {"mae": "MAE", "vit": "ViT"}
SUBCELL_SEEDS = 10  # MLP classifiers per encoder in SubCell's bucket, seeds 0..9


def _sources() -> dict[str, WeightSource]:
    dino4cells = dict(arch="vit_base16", layout="dino", channels="rgby", normalize="self", img_size=224, ln_eps=1e-6,
                      licence="the Zenodo record's (read from its API at download, kept in the cache sidecar)")
    out = {
        # Doron et al. 2023 (bioRxiv 10.1101/2023.06.16.545359), code broadinstitute/DINO4Cells_code
        "dino4cells-hpa-fov": WeightSource("dino4cells-hpa-fov", zenodo_record="8061392",
                                           filename="DINO_FOV_checkpoint.pth",
                                           source="https://zenodo.org/records/8061392", **dino4cells),
        "dino4cells-hpa-cell": WeightSource("dino4cells-hpa-cell", zenodo_record="8061426",
                                            source="https://zenodo.org/records/8061426", **dino4cells),
        # Meta FAIR, facebookresearch/dinov2 (cell_dino_hpa_vitl16); the weights are given out on request
        "cell-dino-hpa": WeightSource("cell-dino-hpa", arch="vit_large16", layout="dinov2", channels="rgby",
                                      normalize="self", img_size=224, ln_eps=1e-6, layerscale=1.0,
                                      filename="cell_dino_hpa_vitl16.pth", needs_acceptance=True,
                                      licence="FAIR Noncommercial Research License (research use only, not for "
                                              "commercial or clinical use)",
                                      source="https://github.com/facebookresearch/dinov2/blob/main/docs/"
                                             "README_CELL_DINO.md"),
    }
    # Ouyang et al. 2019 (Nature Methods 16:1254, the 2018 Kaggle competition); the network is
    # CellProfiling/densenet predict/models.py `class_densenet121_large_dropout`, run by its predict_d121.py
    out["bestfitting-2018"] = WeightSource(
        "bestfitting-2018", arch="densenet121", layout="bestfitting", channels="rgby", normalize="bestfitting2018",
        img_size=1024, ln_eps=0.0, github_release="CellProfiling/densenet@v0.1.0",
        filename="external_crop512_focal_slov_hardlog_class_densenet121_dropout_i768_aug2_5folds_fold0_final.pth",
        settings={"normalize": "bestfitting2018", "variant": "bestfitting2018", "pool": "acp", "head_hidden": [1024],
                  "head_dropout": [0.5]},
        licence="not stated by CellProfiling/densenet (the winners' code, CellProfiling/HPA-competition-solutions, is "
                "MIT); cite Ouyang et al., Nature Methods 16:1254 (2019)",
        source="https://github.com/CellProfiling/densenet")
    # Gupta et al. 2024 (bioRxiv 10.1101/2024.12.06.627299); the address map is models_urls.yaml of
    # CellProfiling/SubCellPortable (MIT)
    for ch, prefix in SUBCELL_CHANNELS.items():
        for variant, stem in _SUBCELL_VARIANTS.items():
            name = f"subcell-{ch}-{variant}"
            file = f"{prefix}_{stem}.pth"
            out[name] = WeightSource(name, arch="vit_base16", layout="hf_vit", channels=ch, normalize="minmax",
                                     img_size=448, ln_eps=1e-12, s3_key=f"models/{file}", filename=file,
                                     licence="MIT (CellProfiling/SubCellPortable)",
                                     source="https://github.com/CellProfiling/SubCellPortable")
            folder = f"{prefix}_{_SUBCELL_HEADS[variant]}_MLP_classifier"  # beside the encoders in the bucket
            for k in range(SUBCELL_SEEDS):
                head = f"{name}-mlp{k}"
                out[head] = WeightSource(head, arch="subcell_vit", layout="subcell_mlp", channels=ch,
                                         normalize="minmax", img_size=448, ln_eps=1e-12,
                                         s3_key=f"models/{folder}/{folder}_seed_{k}.pth",
                                         filename=f"{folder}_seed_{k}.pth", pretrainable=False,
                                         licence="MIT (CellProfiling/SubCellPortable)",
                                         source="https://github.com/CellProfiling/SubCellPortable")
    # the HPA's segmentation U-Nets (CellProfiling/HPA-Cell-Segmentation `constants.py`), whole pickled
    # pytorch_zoo DPNUnet models read by hpa.models.pickled_modules; run by hpa.prediction.hpa_cellseg
    for name, file, stains in (("hpa-cellseg-nuclei", "dpn_unet_nuclei_v1.pth", "bbb"),
                               ("hpa-cellseg-cell", "dpn_unet_cell_3ch_v1.pth", "ryb")):
        out[name] = WeightSource(name, arch="dpn_unet", layout="hpa_cellseg", channels=stains, normalize="dpn",
                                 img_size=0, ln_eps=0.0, zenodo_record="4665863", filename=file, pretrainable=False,
                                 licence="the Zenodo record's (read from its API at download, kept in the cache "
                                         "sidecar)",
                                 source="https://github.com/CellProfiling/HPA-Cell-Segmentation")
    # the 2021 winner's cell classifier as the BioImage Model Zoo holds it (hpa.prediction.cell_models)
    out["bestfitting-2021-cells"] = WeightSource(
        "bestfitting-2021-cells", arch="inceptionv3_cells", layout="torchscript", channels="rgby", normalize="0-255",
        img_size=128, ln_eps=0.0, zenodo_record="6539073", pretrainable=False,
        sha256="3eb4d8ca9907223c6f79c73cec32cd8a9db0ba642da4967d9b110a0a16e2680e",
        licence="the Zenodo record's (read from its API at download, kept in the cache sidecar)",
        source="https://bioimage.io/#/?id=10.5281%2Fzenodo.5910854")
    return out


SOURCES = _sources()


def is_named(pretrained: str | None) -> bool:
    """Weights `--pretrained` takes by name (a published model's classifier heads are not)."""
    return pretrained in SOURCES and SOURCES[pretrained].pretrainable


def source(name: str) -> WeightSource:
    if name not in SOURCES:
        named = ", ".join(sorted(k for k, w in SOURCES.items() if w.pretrainable))
        raise ConfigError(f"--pretrained {name}: unknown weights; named HPA weights: {named}")
    return SOURCES[name]


def require_acceptance(name: str, accepted: bool) -> None:
    """Weights under a restrictive licence are used only after the user says so."""
    w = source(name)
    if w.needs_acceptance and not accepted:
        raise ConfigError(f"--pretrained {name}: its weights are under the {w.licence}; read it at {w.source} and "
                          "pass --accept-licence (or set accept_licence: true) to use them")


def cached_path(w: WeightSource) -> Path:
    return layout.weights_cache() / w.name / (w.filename or f"{w.name}.pth")


def _get(url: str, headers: dict | None = None, timeout: float = 60):
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout)


def _zenodo_file(w: WeightSource) -> tuple[str, int, tuple[str, str] | None, str]:
    """(address, size, md5, licence) of the weights file of a Zenodo record, from the record API."""
    api = f"{zenodo_url()}/api/records/{w.zenodo_record}"
    with _get(api) as r:
        record = json.load(r)
    files = record.get("files") or []
    if isinstance(files, dict):  # the InvenioRDM form: {"entries": {...}}
        files = list((files.get("entries") or {}).values())
    pick = [f for f in files if f.get("key") == w.filename] if w.filename else \
        [f for f in files if str(f.get("key", "")).endswith((".pth", ".pt"))]
    if len(pick) != 1:
        names = ", ".join(str(f.get("key")) for f in files)
        raise WeightsError(f"--pretrained {w.name}: Zenodo record {w.zenodo_record} holds {names or 'no files'}; "
                           f"expected {'one ' + w.filename if w.filename else 'one .pth checkpoint'}")
    f = pick[0]
    checksum = str(f.get("checksum", ""))
    md5 = checksum.removeprefix("md5:") if checksum.startswith("md5:") else None
    links = f.get("links") or {}
    url = links.get("self") or links.get("content") or f"{api}/files/{f['key']}/content"
    lic = (record.get("metadata") or {}).get("license") or {}
    return url, int(f["size"]), md5 and ("md5", md5), (lic.get("id") if isinstance(lic, dict) else str(lic)) or \
        "not stated"


def _github_file(w: WeightSource) -> tuple[str, int, tuple[str, str] | None, str]:
    """(address, size, checksum, licence) of a release asset, from GitHub's release API, which
    gives each asset's sha256 as `digest` (assets uploaded before mid-2025 may have none)."""
    repo, tag = w.github_release.split("@")
    with _get(f"{github_api_url()}/repos/{repo}/releases/tags/{tag}") as r:
        release = json.load(r)
    assets = release.get("assets") or []
    pick = [a for a in assets if a.get("name") == w.filename]
    if len(pick) != 1:
        names = ", ".join(str(a.get("name")) for a in assets)
        raise WeightsError(f"{w.name}: release {tag} of {repo} holds {names or 'no files'}; expected {w.filename}")
    a = pick[0]
    digest = str(a.get("digest") or "")
    checksum = ("sha256", digest.removeprefix("sha256:")) if digest.startswith("sha256:") else None
    return a["browser_download_url"], int(a["size"]), checksum, w.licence


def _s3_file(w: WeightSource) -> tuple[str, int, tuple[str, str] | None, str]:
    """(address, size, md5 when the ETag is one, licence) from a HEAD request."""
    url = f"{subcell_url()}/{w.s3_key}"
    req = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(req, timeout=60) as r:
        size = int(r.headers["Content-Length"])
        etag = (r.headers.get("ETag") or "").strip('"')
    md5 = etag if len(etag) == 32 and "-" not in etag else None  # a multipart upload's ETag is no md5
    return url, size, md5 and ("md5", md5), w.licence


def _download(url: str, dest: Path, size: int, checksum: tuple[str, str] | None, echo) -> None:
    """Into `<dest>.part`, continuing what an earlier attempt left there; checked, then renamed."""
    from hpa.core.digests import file_digest
    from hpa.core.runtime import progress

    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    if have > size:
        part.unlink()
        have = 0
    if have < size:
        headers = {"Range": f"bytes={have}-"} if have else {}
        with _get(url, headers) as r:
            if have and r.status != 206:  # the server ignored the range: start again
                have = 0
            if have:
                echo(f"resuming {dest.name} at {have / 2**20:.0f} of {size / 2**20:.0f} MiB")
            with open(part, "ab" if have else "wb") as f, \
                    progress(total=size, initial=have, unit="B", unit_scale=True, desc=dest.name) as bar:
                while chunk := r.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
    got = part.stat().st_size
    if got != size:
        raise WeightsError(f"{url}: downloaded {got} bytes of {size}; run the same command again to continue")
    if checksum:
        algo, want = checksum
        got_digest = file_digest(part, algo)
        if got_digest != want:
            part.unlink()
            raise WeightsError(f"{url}: {algo} {got_digest} differs from the publisher's {want}; the download was "
                               "deleted, run the same command again")
    os.replace(part, dest)


def fetch(name: str, echo=print) -> Path:
    """The local file of the named weights: from the cache, or downloaded and verified into it."""
    w = source(name)
    dest = cached_path(w)
    if dest.is_file():
        if w.sha256 and not layout.weights_sidecar(dest).is_file():  # put there by hand: the pinned digest decides
            from hpa.core.digests import file_sha256

            if file_sha256(dest) != w.sha256:
                raise WeightsError(f"{dest}: not the publisher's file (its sha256 differs from {w.sha256}); "
                                   f"download {w.where()} again")
        return dest
    if w.s3_key is None and w.zenodo_record is None and w.github_release is None:
        raise WeightsError(f"{name}: the weights are not public; get them as {w.source} says "
                           f"({w.licence}) and put the file at {dest}, or pass --pretrained FILE")
    where = w.where()
    if offline():
        raise WeightsError(f"{name}: not in the cache and HF_HUB_OFFLINE is set; on a machine with internet download "
                           f"{where} and put it at {dest}")
    try:
        url, size, checksum, licence = (_zenodo_file(w) if w.zenodo_record else
                                        _github_file(w) if w.github_release else _s3_file(w))
        echo(f"downloading {name} ({size / 2**20:.0f} MiB, licence: {licence}) from {url} into {dest}")
        _download(url, dest, size, checksum, echo)
    except WeightsError:
        raise
    except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
        raise WeightsError(f"{name}: downloading {where} failed ({type(e).__name__}: "
                           f"{' '.join(str(e).split())[:120]}); run again to continue, or download it by hand to "
                           f"{dest}") from None
    from hpa.core.atomic import atomic_write_text
    from hpa.core.digests import file_sha256

    if w.sha256 and file_sha256(dest) != w.sha256:
        dest.unlink()
        raise WeightsError(f"{name}: the downloaded file's sha256 differs from the publisher's {w.sha256}; it was "
                           "deleted")
    atomic_write_text(layout.weights_sidecar(dest), json.dumps(
        {"name": name, "url": url, "size": size, "checksum": checksum and ":".join(checksum),
         "verified": f"size and {checksum[0]}" if checksum else "size",
         "sha256": file_sha256(dest), "licence": licence, "source": w.source}, indent=1))
    return dest
