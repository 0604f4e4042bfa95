"""Cells by the HPA's own networks (CellProfiling/HPA-Cell-Segmentation, Zenodo record 4665863):
a nucleus U-Net on the blue stain and a cell U-Net on microtubules, ER and nuclei
(hpa.models.dpn_unet), then the publisher's seeded-watershed labelling (`hpacellseg.utils.label_cell`),
written here with scikit-image.

As the publisher's `CellSegmentator` runs them: each stain in [0, 1], the field scaled by 1/4
(here cv2's area interpolation), reflect-padded by 32 px and up to a multiple of 32, normalised by
the DPN's ImageNet mean (124, 117, 104)/255 and scale 0.0167 * 255, softmax over (background,
border, inside), cropped and scaled back to the field's size as 8-bit maps. The labelling's sizes
(nuclei of 2500 px, cells of 5500 px at least) are the publisher's, in pixels of an HPA field
(about 0.08 um per pixel at 2048 px), and apply at the field's own resolution: on images of another
magnification use the default segmenter (hpa.prediction.cells.segment_cells).
"""

from __future__ import annotations

import numpy as np
import torch

NUCLEI_WEIGHTS = "hpa-cellseg-nuclei"
CELL_WEIGHTS = "hpa-cellseg-cell"
SCALE = 0.25
PAD = 32
MEAN = (124 / 255, 117 / 255, 104 / 255)
STD = 1 / (0.0167 * 255)
MIN_NUCLEUS, MIN_CELL = 2500, 5500  # px at the field's resolution, as the publisher filters


def network_maps(net: torch.nn.Module, x: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """A U-Net's 8-bit (background, border, inside) maps of an H x W x 3 float image in [0, 1],
    at the image's size."""
    import cv2

    h, w = x.shape[:2]
    small = cv2.resize(x.astype(np.float32), (max(1, round(w * SCALE)), max(1, round(h * SCALE))),
                       interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    padded = cv2.copyMakeBorder(small, PAD, PAD - sh % PAD, PAD, PAD - sw % PAD, cv2.BORDER_REFLECT)
    t = torch.from_numpy(padded.transpose(2, 0, 1).copy())[None]
    t = (t - torch.tensor(MEAN).view(1, 3, 1, 1)) / STD
    with torch.no_grad():
        p = torch.softmax(net.to(device)(t.to(device)).float(), 1)[0].cpu().numpy().transpose(1, 2, 0)
    p = p[PAD:PAD + sh, PAD:PAD + sw]
    p = cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.rint(p * 255), 0, 255).astype(np.uint8)


def _fill_labels(lab: np.ndarray) -> np.ndarray:
    """Holes of labelled objects filled; touching objects parted by their boundary pixels."""
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    inner = np.where(find_boundaries(lab), 0, lab)
    return ndi.label(ndi.binary_fill_holes(inner > 0))[0]


def label_cells(nuclei: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Cell labels (H x W int32) from the two networks' 8-bit maps (H x W x 3: background, border,
    inside), by the publisher's steps: nuclei seeded where the inside is confident away from any
    border, grown over the nucleus mask (watershed with lines); cells grown from the nuclei over the
    cell interior above max(0.22, Otsu / 2), closed (disk 6), holes filled, extended over the cell
    borders, and objects under the publisher's sizes removed."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu
    from skimage.measure import label
    from skimage.morphology import closing, disk, remove_small_holes, remove_small_objects
    from skimage.segmentation import watershed

    n_in = nuclei[..., 2] / 255.0
    border = (nuclei[..., 1].astype(np.float64) + cells[..., 1]) / 255.0
    seeds = remove_small_objects((n_in * (1 - border > 0.05)) > 0.15, max_size=499)
    mask = remove_small_objects(remove_small_holes(n_in > 0.4, max_size=999), max_size=7)
    nuc = watershed(mask.astype(np.uint8), ndi.label(seeds)[0], mask=mask, watershed_line=True)
    nuc = label(remove_small_objects(nuc, max_size=MIN_NUCLEUS - 1) > 0)
    if nuc.max() == 0:
        return np.zeros(nuc.shape, np.int32)
    c_in = cells[..., 2] / 255.0
    thr = max(0.22, 0.5 * float(threshold_otsu(c_in)) if c_in.max() > c_in.min() else 0.22)
    region = (c_in > thr) & (cells[..., 1] / 255.0 <= 0.05)
    height = np.clip(cells[..., 2].astype(np.float64), 255 * thr, None)
    lab = watershed(-height, nuc, mask=region)
    lab = closing(remove_small_objects(lab, max_size=MIN_CELL - 1), disk(6))
    lab = _fill_labels(lab)
    lab = watershed(-height, lab, mask=(lab > 0) | (cells[..., 1] / 255.0 > 0.05))
    lab = label(_fill_labels(lab) > 0)
    return label(remove_small_objects(lab, max_size=MIN_CELL - 1) > 0).astype(np.int32)


class HPASegmenter:
    """The two published networks, loaded once; called on an H x W x 4 r g b y uint8 field."""

    def __init__(self, nuclei: torch.nn.Module, cells: torch.nn.Module, device: torch.device | str = "cpu") -> None:
        self.nuclei, self.cells, self.device = nuclei.eval(), cells.eval(), device

    @classmethod
    def published(cls, device: torch.device | str = "cpu", echo=print) -> HPASegmenter:
        from hpa.models.dpn_unet import load_dpn_unet
        from hpa.models.hpa_weights import fetch

        return cls(load_dpn_unet(fetch(NUCLEI_WEIGHTS, echo)), load_dpn_unet(fetch(CELL_WEIGHTS, echo)), device)

    def maps(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = img.astype(np.float32) / 255.0
        blue = f[..., 2]
        nuc = network_maps(self.nuclei, np.dstack([blue, blue, blue]), self.device)
        cell = network_maps(self.cells, np.dstack([f[..., 0], f[..., 3], blue]), self.device)
        return nuc, cell

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return label_cells(*self.maps(img))
