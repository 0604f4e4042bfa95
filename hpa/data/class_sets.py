"""Class sets: the localisation classes a model predicts, in its own order and words, and how each
set maps onto the Kaggle 2018 28 (the toolkit's own set, hpa.data.labels).

- `kaggle2018`: the 28 classes of the 2018 Kaggle competition (hpa.data.labels.CLASS_NAMES).
- `hpa2021`: the 19 of the 2021 Kaggle "Human Protein Atlas - Single Cell Classification"
  competition (Le et al., Nature Methods 19:1221, 2022), whose submissions per-cell outputs are
  written for. Its classes merged 2018 ones: a 2021 class takes the largest probability of the 2018
  classes it merged (`from_kaggle2018`).
- `subcell31`: SubCell's 31 (Gupta et al. 2024; `CLASS2NAME` in CellProfiling/SubCellPortable
  `inference.py`): the HPA's later annotation, with classes the 2018 set lacks (centriolar
  satellite, midbody, mitotic chromosome, nucleoli rim, vesicles, negative).

A class maps onto a Kaggle 2018 class only where the two name the same compartment. A class of
either set with no counterpart is left empty (no value), never filled from a neighbour: SubCell's
`Vesicles` covers what 2018 split into endosomes, lysosomes and peroxisomes and others, so none of
those three takes its probability; 2018's `Microtubule ends`, `Microtubule organizing center` and
`Rods & rings` have no SubCell class.
"""

from __future__ import annotations

import numpy as np

from hpa.data.labels import CLASS_NAMES
from hpa.errors import ConfigError

KAGGLE2018 = "kaggle2018"

SUBCELL31: tuple[str, ...] = (
    "Actin filaments", "Aggresome", "Cell Junctions", "Centriolar satellite", "Centrosome", "Cytokinetic bridge",
    "Cytoplasmic bodies", "Cytosol", "Endoplasmic reticulum", "Endosomes", "Focal adhesion sites", "Golgi apparatus",
    "Intermediate filaments", "Lipid droplets", "Lysosomes", "Microtubules", "Midbody", "Mitochondria",
    "Mitotic chromosome", "Mitotic spindle", "Nuclear bodies", "Nuclear membrane", "Nuclear speckles", "Nucleoli",
    "Nucleoli fibrillar center", "Nucleoli rim", "Nucleoplasm", "Peroxisomes", "Plasma membrane", "Vesicles",
    "Negative")

HPA2021: tuple[str, ...] = (
    "Nucleoplasm", "Nuclear membrane", "Nucleoli", "Nucleoli fibrillar center", "Nuclear speckles", "Nuclear bodies",
    "Endoplasmic reticulum", "Golgi apparatus", "Intermediate filaments", "Actin filaments", "Microtubules",
    "Mitotic spindle", "Centrosome", "Plasma membrane", "Mitochondria", "Aggresome", "Cytosol",
    "Vesicles and punctate cytosolic patterns", "Negative")

SETS: dict[str, tuple[str, ...]] = {KAGGLE2018: CLASS_NAMES, "subcell31": SUBCELL31, "hpa2021": HPA2021}

# Kaggle 2018 class -> the 2021 class it went into: the same compartment, or a merge of 2018 classes
# (focal adhesion sites into actin filaments, the microtubule organising centre into centrosome, cell
# junctions into plasma membrane, and the small cytoplasmic compartments into vesicles and punctate
# cytosolic patterns). Microtubule ends, cytokinetic bridge and rods & rings have no 2021 class.
KAGGLE2018_TO_HPA2021: dict[int, int] = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 8: 17, 9: 17, 10: 17, 11: 8,
                                         12: 9, 13: 9, 14: 10, 17: 11, 18: 12, 19: 12, 20: 17, 21: 13, 22: 13,
                                         23: 14, 24: 15, 25: 16, 26: 17}

# set -> {its class index: the Kaggle 2018 class index of the same compartment}
TO_KAGGLE2018: dict[str, dict[int, int]] = {
    KAGGLE2018: {k: k for k in range(len(CLASS_NAMES))},
    "subcell31": {0: 12, 1: 24, 2: 22, 4: 19, 5: 16, 6: 26, 7: 25, 8: 6, 9: 9, 10: 13, 11: 7, 12: 11, 13: 20,
                  14: 10, 15: 14, 17: 23, 19: 17, 20: 5, 21: 1, 22: 4, 23: 2, 24: 3, 26: 0, 27: 8, 28: 21},
}


def class_set(names: list[str] | tuple[str, ...], where: str) -> str:
    """The name of the set whose classes `names` are, in order; otherwise one line."""
    for name, classes in SETS.items():
        if tuple(names) == classes:
            return name
    raise ConfigError(f"{where}: classes: {len(names)} names that are none of the known class sets "
                      f"({', '.join(f'{k} ({len(v)})' for k, v in SETS.items())})")


def to_kaggle2018(probs: np.ndarray, set_name: str) -> tuple[np.ndarray, list[int]]:
    """Probabilities of `set_name`'s classes as the Kaggle 28 columns (NaN where a Kaggle class has
    no counterpart), and those empty Kaggle classes."""
    mapping = TO_KAGGLE2018[set_name]
    out = np.full((len(probs), len(CLASS_NAMES)), np.nan)
    for k, kaggle in mapping.items():
        out[:, kaggle] = probs[:, k]
    return out, sorted(set(range(len(CLASS_NAMES))) - set(mapping.values()))


def from_kaggle2018(probs: np.ndarray) -> np.ndarray:
    """Kaggle 2018 probabilities (N x 28) as the 2021 competition's 19 classes: each 2021 class the
    largest probability of the 2018 classes that went into it; `Negative`, which no 2018 class is,
    stays NaN."""
    out = np.full((len(probs), len(HPA2021)), np.nan)
    for k, j in KAGGLE2018_TO_HPA2021.items():
        out[:, j] = np.fmax(out[:, j], probs[:, k])
    return out


def to_hpa2021(probs: np.ndarray, set_name: str) -> np.ndarray:
    """Probabilities of `set_name`'s classes as the 2021 competition's 19 (NaN where a 2021 class has
    no counterpart): the 2021 set as it is; another set through its Kaggle 2018 counterparts
    (from_kaggle2018), SubCell's `Negative` onto the 2021 `Negative`."""
    if set_name == "hpa2021":
        return np.asarray(probs, float)
    out = from_kaggle2018(to_kaggle2018(probs, set_name)[0] if set_name != KAGGLE2018 else probs)
    if set_name == "subcell31":
        out[:, HPA2021.index("Negative")] = probs[:, SUBCELL31.index("Negative")]
    return out
