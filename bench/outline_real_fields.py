"""The offline segmenter's cells outlined on the real HPA fields of ../shared, as one picture for
the manual (docs/cells.jpg): each field's composite (protein green, microtubules red, nuclei blue,
ER yellow) at 384 px with its cells' outlines in white and its cell count.

    python bench/outline_real_fields.py
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from results import SHARED

ROOT = Path(__file__).resolve().parents[1]
SIDE = 384


def main() -> None:
    from skimage.segmentation import find_boundaries

    from hpa.core.atomic import atomic_outputs
    from hpa.data.images import read_sample
    from hpa.prediction.cells import segment_cells
    from hpa.prediction.explain import composite

    d = SHARED / "hpa-samples"
    tiles = []
    for sid in pd.read_csv(d / "labels.csv", dtype=str)["Id"]:
        img = read_sample(d / "images", sid)
        lab = segment_cells(img)
        small = cv2.resize(lab, (SIDE, SIDE), interpolation=cv2.INTER_NEAREST)
        rgb = composite(cv2.resize(img, (SIDE, SIDE), interpolation=cv2.INTER_AREA)).copy()
        rgb[find_boundaries(small, mode="inner")] = 255
        cv2.putText(rgb, f"{img.shape[0]} px, {lab.max()} cells", (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(rgb)
    rows = [np.hstack(tiles[k:k + 4]) for k in range(0, len(tiles), 4)]
    picture = np.vstack(rows)
    out = ROOT / "docs" / "cells.jpg"
    with atomic_outputs() as tmp:
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
        tmp(out).write_bytes(jpg.tobytes())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
