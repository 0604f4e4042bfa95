"""YAML configs: `configs/default.yaml` overlaid by `configs/<arch>.yaml`, then command-line flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    return data


def load_arch_config(arch: str, config_dir: Path = CONFIG_DIR) -> dict:
    cfg = read_yaml(config_dir / "default.yaml")
    arch_file = config_dir / f"{arch}.yaml"
    if arch_file.is_file():
        cfg = deep_merge(cfg, read_yaml(arch_file))
    return cfg


def apply_config_defaults(parser: argparse.ArgumentParser, cfg: dict) -> None:
    """Use config values as argparse defaults so that explicit flags win (timm's train.py does
    the same). Keys the parser does not know stay in the config only."""
    known = {a.dest for a in parser._actions}
    parser.set_defaults(**{k: v for k, v in cfg.items() if k in known})


def save_yaml(path: Path, data: dict) -> None:
    from hpa.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
