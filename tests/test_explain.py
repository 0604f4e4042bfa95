"""Class activation maps against cases with a known answer, and the stain composite."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hpa.models import HPANet
from hpa.prediction.explain import INVERSE, composite, grad_cam, normalise, tta_cam
from hpa.prediction.inference import DIHEDRAL, dihedral

QUADRANTS = {"top-left": (slice(0, 32), slice(0, 32)), "top-right": (slice(0, 32), slice(32, 64)),
             "bottom-left": (slice(32, 64), slice(0, 32)), "bottom-right": (slice(32, 64), slice(32, 64))}


def quadrant_model(reads: dict[int, int]) -> HPANet:
    """An HPANet whose encoder passes the 4 stains through (a 1x1 identity convolution) and whose
    class k logit is the mean of stain reads[k] alone: its evidence sits wherever that stain is."""
    enc = nn.Conv2d(4, 4, 1, bias=False)
    with torch.no_grad():
        enc.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
    enc.feature_info = [{"module": ""}]
    net = HPANet(enc, 4, pool="avg")
    with torch.no_grad():
        net.head[-1].weight.zero_()
        net.head[-1].bias.zero_()
        for k, c in reads.items():
            net.head[-1].weight[k, c] = 1.0
    return net.eval()


def four_stains() -> torch.Tensor:
    """Each stain bright in its own quadrant: red top-right, green top-left, blue bottom-left, yellow bottom-right."""
    x = torch.zeros(1, 4, 64, 64)
    for c, q in zip((1, 0, 2, 3), QUADRANTS.values()):
        x[0, c][q] = 1.0
    return x


def mass_in(cam: np.ndarray, quadrant: str) -> float:
    return float(cam[QUADRANTS[quadrant]].sum() / cam.sum())


@pytest.mark.parametrize(("k", "stain", "quadrant"), [(0, 1, "top-left"), (5, 0, "top-right"), (7, 2, "bottom-left"),
                                                      (20, 3, "bottom-right")])
def test_grad_cam_finds_the_quadrant_holding_the_class_evidence(k, stain, quadrant):
    net = quadrant_model({k: stain})
    cam = grad_cam(net, four_stains(), [k])[0, 0].numpy()
    assert mass_in(cam, quadrant) > 0.95  # bilinear upsampling spreads a little over the border


def test_tta_maps_are_turned_back_to_the_image_orientation():
    """With all 8 views averaged, the map must stay in its quadrant: a view whose map was not turned
    back would put mass in the other three."""
    net = quadrant_model({3: 1})
    x = four_stains()
    for name in DIHEDRAL:  # the inverse table undoes every transform
        assert torch.equal(dihedral(dihedral(x, name), INVERSE[name]), x)
    cam = tta_cam([net, net], x, [3], DIHEDRAL)[0, 0].numpy()
    assert mass_in(cam, "top-left") > 0.95
    assert np.allclose(cam, grad_cam(net, x, [3])[0, 0].numpy(), atol=1e-5)  # symmetric evidence: the same map


def test_a_class_without_evidence_has_an_empty_map_and_normalise_keeps_it_empty():
    net = quadrant_model({0: 1})
    cam = grad_cam(net, four_stains(), [9])[0, 0].numpy()  # class 9 reads nothing
    assert cam.max() == 0
    maps = normalise(np.stack([cam, np.arange(16.0).reshape(4, 4).repeat(16, 0).repeat(16, 1)]))
    assert maps[0].max() == 0 and maps[1].max() == 1.0


def test_composite_uses_hpa_colours():
    img = np.zeros((2, 2, 4), np.uint8)
    img[0, 0] = (200, 0, 0, 0)  # microtubules -> red
    img[0, 1] = (0, 200, 0, 0)  # protein -> green
    img[1, 0] = (0, 0, 200, 0)  # nucleus -> blue
    img[1, 1] = (0, 0, 0, 200)  # ER -> yellow (red + green)
    rgb = composite(img)
    assert rgb[0, 0].tolist() == [200, 0, 0]
    assert rgb[0, 1].tolist() == [0, 200, 0]
    assert rgb[1, 0].tolist() == [0, 0, 200]
    assert rgb[1, 1].tolist() == [100, 100, 0]
