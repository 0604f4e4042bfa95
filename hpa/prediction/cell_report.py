"""The cells in report.html: once hpa.prediction.cells.predict_cells has segmented and predicted
every cell of a folder, the page beside the predictions is written again with them (each cell's
outline on the field as the page shows it, its area and its probabilities), in the same atomic
write as cells.csv, so the page and the table never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

OUTLINE_TOLERANCE = 0.75  # px of the shown field an outline may stray from the cell's edge (keeps the page small)


def outlines(labels: np.ndarray) -> dict[int, list[list[float]]]:
    """Each cell's outline on a label grid: rings of x, y vertices (flat), in pixel units whose
    origin is the grid's top-left corner (a pixel (row i, col j) spans x j..j+1, y i..i+1), on the
    edges between the cell's pixels and the others (skimage's contours at 0.5, simplified)."""
    from scipy import ndimage as ndi
    from skimage.measure import approximate_polygon, find_contours

    out: dict[int, list[list[float]]] = {}
    for k, box in enumerate(ndi.find_objects(labels), 1):
        if box is None:
            continue
        (ys, xs) = box
        inside = np.pad(labels[box] == k, 1).astype(np.float32)
        rings = []
        for ring in find_contours(inside, 0.5):
            ring = approximate_polygon(ring, OUTLINE_TOLERANCE)
            # a contour point (row, col) of the padded box: the grid's pixel (row - 1, col - 1) from the
            # box's corner, whose centre is half a pixel from its edges
            rings.append([round(float(v), 2) for y, x in ring for v in (x - 0.5 + xs.start, y - 0.5 + ys.start)])
        out[k] = rings
    return out


def with_cells(report: Path, table: pd.DataFrame, masks: Path, ids: list[str], classes: tuple[str, ...],
               echo: Callable[[str], None] = print) -> str | None:
    """The report page at `report` again with the cells of `table` (cells.csv's rows, a probability
    per class of `classes`) found in the fields `ids`, and their label masks in `masks`
    (hpa.data.layout.cell_mask); None (and a line why) where there is no report, or it shows other
    images than `ids`. Cells of another class set than the page's images (a cell model's) carry
    their own class names, at threshold 0.5."""
    from hpa.data import layout
    from hpa.prediction.cells import read_labels, square_labels
    from hpa.prediction.html_report import page, page_data

    if not Path(report).is_file():
        return None
    data = page_data(report)
    if sorted(r["id"] for r in data["rows"]) != sorted(ids):
        echo(f"{report}: shows other images than the cells' predictions; left as it is (predict the folder again "
             "with its report, then the cells)")
        return None
    n = len(classes)
    if tuple(classes) != tuple(data["classes"]):
        data["cell_classes"], data["cell_thresholds"] = list(classes), [0.5] * n
    by_id = {sid: t for sid, t in table.groupby("Id", sort=False)}
    for row in data["rows"]:
        t = by_id.get(row["id"], table.iloc[:0])
        rings = outlines(square_labels(read_labels(layout.cell_mask(masks, row["id"])), row["side"]))
        probs = t[[str(k) for k in range(n)]].to_numpy(float).round(4)
        row["cells"] = [{"cell": int(c), "area": int(a), "probs": p.tolist(), "rings": rings.get(int(c), [])}
                        for c, a, p in zip(t["cell"], t["area"], probs)]
    data["cells"] = True
    return page(data)
