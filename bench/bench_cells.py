"""Per-cell prediction on the CPU: the offline segmenter's speed on the real HPA fields, and each
per-cell method's speed and per-cell mAP (the 2021 metric) on the demo's test fields, against the
cells the generator drew.

    bash run_all.sh                        # the demo, once: its ensemble and test predictions
    python bench/bench_cells.py [--fields 100]

1. The segmenter (hpa.prediction.cells.segment_cells) on the 8 real fields of ../shared (512, 2048
   and 3072 px): cells per second, reading included.
2. The HPA's U-Nets (`--segmenter hpa`) and the 2021 winner's cell model (`--cells bestfitting-2021`)
   on the same fields. Their published weights cannot be downloaded on the benchmark machine, so
   networks of the same shapes with random weights stand in (speed does not depend on the values):
   DPN-92 U-Nets (hpa.models.dpn_unet) for the segmenter, timed per field (both networks), and a
   TorchScript of torchvision's InceptionV3 with a 4-stain stem and 19 outputs on 128 px crops for
   the cell model, timed per cell on the cells the offline segmenter finds.
3. On the first `--fields` demo test fields, with the demo recipe's blended ensemble (work/demo):
   segmentation quality (true cells found at IoU 0.6, mean best IoU) and, per method (class maps,
   crops), cells per second and per-cell mAP.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
from results import SHARED, write_section

ROOT = Path(__file__).resolve().parents[1]


def segmenter_speed() -> str:
    from hpa.data.images import read_sample
    from hpa.prediction.cells import segment_cells

    d = SHARED / "hpa-samples"
    rows = pd.read_csv(d / "labels.csv", dtype=str)
    cells, t0 = 0, time.perf_counter()
    for sid in rows["Id"]:
        cells += int(segment_cells(read_sample(d / "images", sid)).max())
    s = time.perf_counter() - t0
    return (f"Offline segmenter on the {len(rows)} real HPA fields (512, 2048 and 3072 px PNG, reading included): "
            f"{cells} cells in {s:.1f} s, **{cells / s:.0f} cells/s** ({s / len(rows):.2f} s per field).")


def published_speed() -> str:
    import numpy as np
    import torch
    import torchvision

    from hpa.data.images import read_sample
    from hpa.models.dpn_unet import DPNUNet
    from hpa.prediction.cell_models import CELL_MODELS, cell_model_scores
    from hpa.prediction.cells import segment_cells
    from hpa.prediction.hpa_cellseg import HPASegmenter

    torch.manual_seed(0)
    seg = HPASegmenter(DPNUNet().eval(), DPNUNet().eval())
    d = SHARED / "hpa-samples"
    ids = pd.read_csv(d / "labels.csv", dtype=str)["Id"].tolist()
    fields = [read_sample(d / "images", sid) for sid in ids]
    t0 = time.perf_counter()
    for img in fields:
        seg.maps(img)
    unet = (time.perf_counter() - t0) / len(fields)
    net = torchvision.models.inception_v3(num_classes=19, aux_logits=False, init_weights=False, transform_input=False)
    net.Conv2d_1a_3x3.conv = torch.nn.Conv2d(4, 32, 3, stride=2, bias=False)
    script = torch.jit.script(net.eval())
    spec = CELL_MODELS["bestfitting-2021"]
    labels = [segment_cells(img) for img in fields]
    n = sum(int(lab.max()) for lab in labels)
    t0 = time.perf_counter()
    for img, lab in zip(fields, labels):
        cell_model_scores(script, spec, img, lab, 19, batch_size=64)
    s = time.perf_counter() - t0
    sides = sorted({f.shape[0] for f in fields})
    return (f"The HPA's U-Nets (two DPN-92 U-Nets, each on the field at 1/4) on the same {len(fields)} fields "
            f"({', '.join(map(str, sides))} px): **{unet:.1f} s per field** for the networks "
            f"({np.mean([int(lab.max()) for lab in labels]) / unet:.1f} cells/s at the offline segmenter's count of "
            f"cells per field; the labelling after them is not timed, as random maps hold no cells).\n\n"
            f"The 2021 winner's cell model (InceptionV3, 128 px crops, batch 64) on the {n} cells the offline "
            f"segmenter finds there: **{n / s:.0f} cells/s**, cropping included.")


def methods(n: int) -> str:
    import torch

    from hpa.data import layout
    from hpa.prediction.cells import IMAGE_METHODS, evaluate_cells, predict_cells, segmentation_quality
    from hpa.prediction.ensemble import from_recipe
    from hpa.prediction.folder import predict_folder
    from hpa.prediction.inference import PredictOptions

    data, work = ROOT / "data" / "demo", ROOT / "work" / "demo"
    ens = from_recipe(work, torch.device("cpu"))
    ids = pd.read_csv(layout.split_table(data, "test"))["Id"].tolist()[:n]
    opts = PredictOptions(device="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "ids.csv").write_text("Id\n" + "\n".join(ids) + "\n")
        preds = d / "images" / "predictions.csv"
        predict_folder(ens, layout.raw_dir(data, "test"), preds, ids_csv=d / "ids.csv", report=False, opts=opts,
                       echo=lambda _: None)
        truth = layout.demo_cells(data, "test")
        for method in IMAGE_METHODS:
            out = d / method / "predictions.csv"
            out.parent.mkdir()
            shutil.copyfile(preds, out)
            t0 = time.perf_counter()
            predict_cells(ens, layout.raw_dir(data, "test"), out, method=method, opts=opts, echo=lambda _: None)
            s = time.perf_counter() - t0
            n_cells = len(pd.read_csv(layout.cell_outputs(out)["table"]))
            score, _ = evaluate_cells(out, truth)
            rows.append(f"| {method} | {n_cells / s:.1f} | {score:.4f} |")
        found, mean_iou = segmentation_quality(d / "maps" / "predictions.csv", truth)
    return (f"The demo recipe's ensemble (tiny_cnn at 128 px, 2 folds, TTA 8) on the first {n} demo test fields: "
            f"the segmenter finds {found:.1%} of the drawn cells at IoU 0.6 (mean best IoU {mean_iou:.3f}).\n\n"
            "| per-cell method | cells/s (segmentation included) | per-cell mAP (2021 metric, 19 classes) |\n"
            "|---|---|---|\n" + "\n".join(rows) + "\n\nClass maps beat crops here: the ensemble was trained on "
            "whole fields, and a single cell padded to a square is not what it saw.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fields", type=int, default=100, help="demo test fields for the per-cell methods")
    a = ap.parse_args()
    if not (ROOT / "work" / "demo" / "blend.json").is_file():
        raise SystemExit("error: work/demo/blend.json not found; run bash run_all.sh (the demo) first")
    write_section("cells: segmentation and per-cell prediction", f"python bench/bench_cells.py --fields {a.fields}",
                  segmenter_speed() + "\n\n" + published_speed() + "\n\n" + methods(a.fields))


if __name__ == "__main__":
    main()
