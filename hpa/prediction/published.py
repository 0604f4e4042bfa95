"""Published, trained HPA classifiers by name, wherever a bundle is accepted:

    python predict_tta.py --bundle bestfitting-2018 --images my_images/ --out preds.csv
    hpa.load_bundle("bestfitting-2018").predict_folder("my_images/", "preds.csv")

A name is a weights file of hpa.models.hpa_weights (downloaded once, resumably, verified, into the
weights cache) plus how its publisher runs it: the network's settings, the side and the resizing
of its input, the test-time views and precision, the decision rule. On first use the file is
mapped strictly onto the toolkit's network (hpa.models.weight_layouts) and written once as a
bundle beside it in the cache (safetensors, config.json, a model card naming the source, paper
and licence), so it gets all a bundle gets: TTA on request, thresholds, report.html with class
maps, the bioimage.io export, a place in a blend. The bundle records the sha256 of the file it was
made from and is remade when that changes.

Defaults reproduce the publisher's numbers: bestfitting's predict_d121.py reads each stain as 8-bit
grey, resizes it to 1536 and then to 1024 px (bilinear both times), scales it to [0, 1], runs one
view in fp32 and calls a class when its probability is above 0.5, the top class always. The
toolkit runs the same fp32 network in channels-last memory layout, 1.4-1.6x faster on a 2-core
AVX-512 CPU than the default layout, while bf16 autocast was slower for this DenseNet there
(bench/bench_published.py). The toolkit's decision rule at flat 0.5 thresholds (classes at or
above 0.5; none: the top one) calls the same classes except for a probability of exactly 0.5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hpa.data import layout
from hpa.data.class_sets import SUBCELL31
from hpa.data.labels import CLASS_NAMES


@dataclass(frozen=True)
class PublishedModel:
    name: str
    network: str  # how its files make a network: bestfitting (one whole-network file) | subcell (encoder + heads)
    files: tuple[str, ...]  # the hpa.models.hpa_weights names of its files, the network's first
    size: int  # the side the network sees
    resize: tuple[int, ...]  # sides the publisher's loader resizes through (bilinear), last = size; () the toolkit's
    paper: str
    summary: str  # one line for the model card
    classes: tuple[str, ...] = CLASS_NAMES
    tta: tuple[str, ...] = ("id",)
    amp: str = "off"
    threshold: float = 0.5
    channels_last: bool = False
    rule: str = "a class is called at probability {t}, the top class always"
    encoder: str = "vit_base_patch16_224"  # SubCell's timm ViT
    licence_id: str = "other"  # SPDX; "other" where the publisher states none (no bioimage.io package then)


def _published() -> dict[str, PublishedModel]:
    from hpa.models.hpa_weights import SUBCELL_CHANNELS, SUBCELL_SEEDS

    out = {"bestfitting-2018": PublishedModel(
        "bestfitting-2018", "bestfitting", ("bestfitting-2018",), size=1024, resize=(1536, 1024), channels_last=True,
        paper="Ouyang W. et al., Analysis of the Human Protein Atlas Image Classification competition, "
              "Nature Methods 16:1254-1261 (2019), doi:10.1038/s41592-019-0658-6",
        summary="The 2018 Kaggle HPA winner's (bestfitting) DenseNet121, fold 0: 4 stains, 28 classes, "
                "run at 1024 px with an extra max-pool after the stem")}
    for ch in SUBCELL_CHANNELS:
        for variant in ("mae", "vit"):
            name = f"subcell-{ch}-{variant}"
            out[name] = PublishedModel(
                name, "subcell", (name,) + tuple(f"{name}-mlp{k}" for k in range(SUBCELL_SEEDS)), size=448, resize=(),
                classes=SUBCELL31, licence_id="mit",
                rule="no threshold is published (SubCellPortable reports the top classes); the toolkit calls a class "
                     "at {t}, the top class when none is",
                paper="Gupta A. et al., SubCell: vision foundation models for microscopy capture single-cell "
                      "biology, bioRxiv 10.1101/2024.12.06.627299 (2024)",
                summary=f"SubCell's {variant.upper()} ViT-B/16 classifier on the {ch} stains ({SUBCELL_SEEDS} MLP "
                        "heads averaged), 31 classes; trained on single cells, here run on whole fields at 448 px")
    return out


PUBLISHED = _published()


def is_published(name: str | Path) -> bool:
    return str(name) in PUBLISHED


def _resizing(p: PublishedModel) -> str:
    return f"resized through {' then '.join(map(str, p.resize))} px (bilinear)" if p.resize else \
        f"resized to {p.size} px"


def _card(p: PublishedModel, source: dict) -> str:
    resize = _resizing(p)
    return (f"---\nlibrary_name: hpa-toolkit\nlicense: {p.licence_id}\ntags: [biology, microscopy, "
            f"human-protein-atlas, protein-localization, multi-label]\n---\n\n# {p.name}\n\n{p.summary}.\n\n"
            f"Converted by hpa-toolkit from the publisher's files, unchanged in value: every tensor mapped strictly "
            f"onto the toolkit's network.\n\n- Source: {source['url']}\n- Files sha256: `{source['sha256']}`\n"
            f"- Code: {source['page']}\n- Paper: {p.paper}\n- Licence: {source['licence']}\n"
            f"- Classes: {len(p.classes)} ({', '.join(p.classes)})\n\n"
            f"## As its publisher runs it\n\nStains as 8-bit grey, {resize}, scaled to [0, 1]; one view "
            f"({', '.join(p.tta)}); {p.rule.format(t=p.threshold)}. `--tta 8` adds the dihedral views; thresholds "
            f"fitted on your own labelled images replace the flat {p.threshold}.\n")


def _network(p: PublishedModel, files: list[Path]):
    """The publisher's files mapped strictly onto the toolkit's network: (arch, settings, network)."""
    from hpa.models import build_model, hpa_weights
    from hpa.models.weight_layouts import load_published_cnn, load_subcell

    w = hpa_weights.source(p.files[0])
    if p.network == "bestfitting":
        settings = w.model_settings()
        net = build_model(w.arch, **settings).eval()
        load_published_cnn(net, files[0], w.layout, head=True)
        return w.arch, settings, net
    settings = {"channels": w.channels, "normalize": w.normalize, "img_size": w.img_size, "ln_eps": w.ln_eps,
                "seeds": len(files) - 1, "num_classes": len(p.classes), "encoder": p.encoder}
    net = build_model("subcell_vit", **settings).eval()
    load_subcell(net, files[0], files[1:])
    return "subcell_vit", settings, net


def _sha256(file: Path) -> str:
    """The file's sha256, from its download sidecar where that describes it (a file put in the cache
    by hand has none)."""
    from hpa.core.digests import file_sha256

    sidecar = layout.weights_sidecar(file)
    recorded = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    return recorded.get("sha256") if recorded.get("size") == file.stat().st_size and recorded.get("sha256") else \
        file_sha256(file)


def published_bundle(name: str, echo=print) -> Path:
    """The bundle of a published model in the weights cache: made on first use from the publisher's
    files (fetched if needed), remade when one of them or the toolkit version changes."""
    import hashlib

    from hpa.core.atomic import staged_dir
    from hpa.models import hpa_weights
    from hpa.prediction.bundle import CARD, CONFIG, FORMAT, FORMAT_VERSION, save_weights, toolkit_version

    p = PUBLISHED[name]
    files = [hpa_weights.fetch(f, echo) for f in p.files]
    sha = _sha256(files[0]) if len(files) == 1 else \
        hashlib.sha256(" ".join(_sha256(f) for f in files).encode()).hexdigest()  # of the files' sha256s, in order
    out = layout.published_bundle(name)
    try:
        made = json.loads((out / CONFIG).read_text())
        if made.get("source", {}).get("sha256") == sha and made.get("toolkit_version") == toolkit_version():
            return out
    except (OSError, ValueError):
        pass
    echo(f"{name}: converting {len(files)} file(s) of the publisher into a bundle at {out} (once)")
    arch, settings, net = _network(p, files)
    w = hpa_weights.source(p.files[0])
    sidecar = layout.weights_sidecar(files[0])
    url = (json.loads(sidecar.read_text()).get("url") if sidecar.is_file() else None) or w.where()
    source = {"weights": list(p.files), "url": url, "sha256": sha, "licence": w.licence, "page": w.source,
              "paper": p.paper}
    with staged_dir(out) as tmp:
        weight_files, shas = save_weights(tmp, name, [0], [net], arch, p.size)
        entry = {"name": name, "arch": arch, "size": p.size, "sizes": [p.size], "resize": list(p.resize),
                 "tta": list(p.tta), "amp": p.amp, "model": settings, "channels": ["red", "green", "blue", "yellow"],
                 "input": f"each stain 8-bit grey, {_resizing(p)}, scaled to [0, 1]; the network's own "
                          "normalisation inside",
                 "channels_last": p.channels_last, "folds": [0], "files": weight_files, "sha256": shas}
        config = {"format": FORMAT, "format_version": FORMAT_VERSION, "toolkit_version": toolkit_version(),
                  "license": p.licence_id, "datasets": [], "classes": list(p.classes), "members": [entry],
                  "blend": {"weighting": "equal", "weights": [1.0], "threshold_method": p.rule.format(t=p.threshold),
                            "models": [name]},
                  "thresholds": [p.threshold] * len(p.classes), "source": source, "evidence": {}}
        (tmp / CONFIG).write_text(json.dumps(config, indent=1))
        (tmp / CARD).write_text(_card(p, source))
    return out
