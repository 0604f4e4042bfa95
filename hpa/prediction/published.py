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
toolkit runs the same fp32 network in channels-last memory layout, 2.3x faster on a 2-core AVX-512
CPU than the default layout, while bf16 (autocast or bf16 weights) was slower for this DenseNet
there (bench/bench_published.py). The
toolkit's decision rule at flat 0.5 thresholds (classes at or above 0.5; none: the top one) calls
the same classes except for a probability of exactly 0.5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hpa.data import layout


@dataclass(frozen=True)
class PublishedModel:
    name: str
    weights: str  # the hpa.models.hpa_weights name of its file
    size: int  # the side the network sees
    resize: tuple[int, ...]  # the sides the publisher's loader resizes through (bilinear), last = size
    paper: str
    summary: str  # one line for the model card
    tta: tuple[str, ...] = ("id",)
    amp: str = "off"
    threshold: float = 0.5


PUBLISHED = {
    "bestfitting-2018": PublishedModel(
        "bestfitting-2018", weights="bestfitting-2018", size=1024, resize=(1536, 1024),
        paper="Ouyang W. et al., Analysis of the Human Protein Atlas Image Classification competition, "
              "Nature Methods 16:1254-1261 (2019), doi:10.1038/s41592-019-0658-6",
        summary="The 2018 Kaggle HPA winner's (bestfitting) DenseNet121, fold 0: 4 stains, 28 classes, "
                "run at 1024 px with an extra max-pool after the stem"),
}


def is_published(name: str | Path) -> bool:
    return str(name) in PUBLISHED


def _card(p: PublishedModel, source: dict) -> str:
    return (f"---\nlibrary_name: hpa-toolkit\nlicense: other\ntags: [biology, microscopy, human-protein-atlas, "
            f"protein-localization, multi-label]\n---\n\n# {p.name}\n\n{p.summary}.\n\n"
            f"Converted by hpa-toolkit from the publisher's file, unchanged in value: every tensor mapped strictly "
            f"onto the toolkit's network.\n\n- Source: {source['url']}\n- File sha256: `{source['sha256']}`\n"
            f"- Code: {source['page']}\n- Paper: {p.paper}\n- Licence: {source['licence']}\n\n"
            f"## As its publisher runs it\n\nStains red, green, blue, yellow as 8-bit grey, resized through "
            f"{' then '.join(map(str, p.resize))} px (bilinear), scaled to [0, 1]; one view ({', '.join(p.tta)}); "
            f"a class is called at probability {p.threshold}, the top class always. `--tta 8` adds the dihedral "
            f"views; thresholds fitted on your own labelled images replace the flat {p.threshold}.\n")


def published_bundle(name: str, echo=print) -> Path:
    """The bundle of a published model in the weights cache: made on first use from the publisher's
    file (fetched if needed), remade when that file changes."""
    from hpa.core.atomic import staged_dir
    from hpa.core.digests import file_sha256
    from hpa.data.labels import CLASS_NAMES
    from hpa.models import build_model, hpa_weights
    from hpa.models.weight_layouts import load_published_cnn
    from hpa.prediction.bundle import CARD, CONFIG, FORMAT, FORMAT_VERSION, save_weights, toolkit_version

    p = PUBLISHED[name]
    w = hpa_weights.source(p.weights)
    file = hpa_weights.fetch(p.weights, echo)
    sidecar = layout.weights_sidecar(file)
    recorded = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    sha = recorded.get("sha256") if recorded.get("size") == file.stat().st_size else None
    sha = sha or file_sha256(file)  # a file put in the cache by hand has no sidecar
    out = layout.published_bundle(name)
    try:
        made = json.loads((out / CONFIG).read_text())
        if made.get("source", {}).get("sha256") == sha and made.get("toolkit_version") == toolkit_version():
            return out
    except (OSError, ValueError):
        pass
    echo(f"{name}: converting {file.name} into a bundle at {out} (once)")
    settings = w.model_settings()
    net = build_model(w.arch, **settings).eval()
    load_published_cnn(net, file, w.layout, head=True)
    source = {"weights": p.weights, "url": recorded.get("url") or w.where(), "sha256": sha, "licence": w.licence,
              "page": w.source, "paper": p.paper}
    member = name
    with staged_dir(out) as tmp:
        files, shas = save_weights(tmp, member, [0], [net], w.arch, p.size)
        entry = {"name": member, "arch": w.arch, "size": p.size, "sizes": [p.size], "resize": list(p.resize),
                 "tta": list(p.tta), "amp": p.amp, "model": settings, "channels": ["red", "green", "blue", "yellow"],
                 "input": "each stain 8-bit grey, resized through " + " then ".join(map(str, p.resize)) +
                          " px (bilinear), scaled to [0, 1]; the network's own normalisation inside",
                 "channels_last": True, "folds": [0], "files": files, "sha256": shas}
        config = {"format": FORMAT, "format_version": FORMAT_VERSION, "toolkit_version": toolkit_version(),
                  "license": "other", "datasets": [], "classes": list(CLASS_NAMES), "members": [entry],
                  "blend": {"weighting": "equal", "weights": [1.0], "threshold_method": "publisher's flat "
                            f"{p.threshold}, the top class always", "models": [member]},
                  "thresholds": [p.threshold] * len(CLASS_NAMES), "source": source, "evidence": {}}
        (tmp / CONFIG).write_text(json.dumps(config, indent=1))
        (tmp / CARD).write_text(_card(p, source))
    return out

