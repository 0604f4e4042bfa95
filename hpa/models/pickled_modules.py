"""Tensors out of a whole pickled network (`torch.save(model)`), as the HPA's segmentation U-Nets are
published, without running any of the pickle's code.

Plain unpickling would import the publisher's classes and call whatever the file names; torch's
`weights_only` loader refuses such files, and cannot read the pre-1.6 (non-zip) format whose
module entries carry their class's source. This loader gives torch.load an unpickler whose only
callables are torch's tensor rebuilders and the containers a module's state is made of
(`collections.OrderedDict`, `set`); every other class or function the file names becomes an inert
placeholder that records the state pickle hands it and does nothing else. The network's tensors are
then read from the placeholders' `_parameters` and `_buffers`, named by the `_modules` tree as
`state_dict()` names them.
"""

from __future__ import annotations

import pickle
import types
import warnings
from collections import OrderedDict
from pathlib import Path

import torch

from hpa.errors import WeightsError

_CALLABLE = {("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
             ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
             ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
             ("collections", "OrderedDict"): OrderedDict, ("builtins", "set"): set, ("__builtin__", "set"): set}


class Inert:
    """What any other global of the file becomes: it keeps the arguments and state it is given."""

    def __init__(self, *args, **kwargs) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state) -> None:
        self.__dict__["_state"] = state[0] if isinstance(state, tuple) and len(state) == 2 else state

    def state(self) -> dict:
        s = self.__dict__.get("_state")
        return s if isinstance(s, dict) else {}


_inert_types: dict[tuple[str, str], type] = {}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _CALLABLE:
            return _CALLABLE[(module, name)]
        if (module, name) == ("copyreg", "_reconstructor"):  # protocol 0/1 objects: make the placeholder only
            return lambda cls, base, state: cls() if isinstance(cls, type) and issubclass(cls, Inert) else Inert()
        key = (module, name)
        if key not in _inert_types:
            _inert_types[key] = type(name, (Inert,), {"__module__": f"inert.{module}"})
        return _inert_types[key]


def _load(file, **kwargs):
    return _Unpickler(file, **kwargs).load()


RESTRICTED = types.SimpleNamespace(Unpickler=_Unpickler, load=_load, __name__="hpa.models.pickled_modules")


def module_tensors(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """(state_dict-named tensors, the pickled class's name) of a whole network saved with
    torch.save(model); a DataParallel wrapper's `module.` is left out. One line if the file is not
    such a network."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        with warnings.catch_warnings():  # the old format's "source of container ... not checked"
            warnings.simplefilter("ignore")
            root = torch.load(path, map_location="cpu", pickle_module=RESTRICTED, weights_only=False)
    except Exception as e:
        raise WeightsError(f"{path}: cannot read a pickled network ({type(e).__name__}: "
                           f"{' '.join(str(e).split())[:160]})") from None
    if not isinstance(root, Inert) or "_modules" not in root.state():
        raise WeightsError(f"{path}: not a whole network saved with torch.save(model) (found a {type(root).__name__})")
    if type(root).__name__ == "DataParallel" and "module" in root.state()["_modules"]:
        root = root.state()["_modules"]["module"]
    out: dict[str, torch.Tensor] = {}

    def walk(node, prefix: str) -> None:
        if not isinstance(node, Inert):
            raise WeightsError(f"{path}: submodule {prefix.rstrip('.') or 'root'} is a {type(node).__name__}, "
                               "not a module")
        st = node.state()
        skip = st.get("_non_persistent_buffers_set") or set()
        for kind in ("_parameters", "_buffers"):
            for name, t in (st.get(kind) or {}).items():
                if t is None or (kind == "_buffers" and name in skip):
                    continue
                if not isinstance(t, torch.Tensor):
                    raise WeightsError(f"{path}: {prefix}{name} is a {type(t).__name__}, not a tensor")
                out[prefix + name] = t.detach()
        for name, child in (st.get("_modules") or {}).items():
            if child is not None:
                walk(child, f"{prefix}{name}.")

    walk(root, "")
    return out, type(root).__name__
