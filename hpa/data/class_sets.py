"""Class sets: the localisation classes a model predicts, in its own order and words, and how each
set maps onto the Kaggle 2018 28 (the toolkit's own set, hpa.data.labels).

- `kaggle2018`: the 28 classes of the 2018 Kaggle competition (hpa.data.labels.CLASS_NAMES).
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

SETS: dict[str, tuple[str, ...]] = {KAGGLE2018: CLASS_NAMES, "subcell31": SUBCELL31}

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
