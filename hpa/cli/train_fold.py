"""Train one fold of one arch.

    python train_fold.py --arch se_resnext50 --fold 3 --size 768 --data-dir data/hpa

Settings: the defaults (--help lists them), then configs/<arch>.yaml, then --config FILE, then
--set key=value, then the flags named after the settings. The merged config is saved in the run
directory, runs/<arch>_<size>/f<fold>/, with log.csv, curves.png, last.pt and best.pt (by
validation macro F1 at threshold 0.5). An existing run is continued with --resume or replaced with
--overwrite, never silently. Several GPUs: torchrun --nproc_per_node N train_fold.py ...
(--batch-size is the effective batch of a step over all GPUs; micro_batch: auto splits it into
what fits each GPU).
"""

from __future__ import annotations

import argparse
import logging
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from hpa import api
from hpa.cli import Parser, options
from hpa.config import TrainConfig, arch_layers, build_config, merge_layers, parse_set, parse_value, read_yaml
from hpa.models import list_archs


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _layers(argv: list[str] | None) -> list[tuple[str, dict]]:
    """The config layers under the flags: configs/<arch>.yaml, --config, --set."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--arch")
    pre.add_argument("--config", type=Path)
    pre.add_argument("--set", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    layers = arch_layers(known.arch if known.arch in list_archs() else None)
    if known.config:
        layers.append((str(known.config), read_yaml(known.config)))
    if known.set:
        layers.append(("--set", parse_set(known.set)))
    return layers


def build_parser(argv: list[str] | None = None) -> Parser:
    """One flag per TrainConfig key (its default in --help is the effective one for the --arch and
    --config of `argv`), `--set key=value`, and the run options."""
    effective, _ = merge_layers([("defaults", {k: f.default for k, f in TrainConfig.model_fields.items()
                                               if not f.is_required() and f.default_factory is None})]
                                + _layers(argv))
    ap = Parser(__doc__, "train_fold.py")
    ap.add_argument("--config", type=Path, help="YAML file of settings applied over configs/<arch>.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any setting, value in YAML syntax (repeatable); dotted keys reach model settings, "
                         "e.g. --set model.head_dropout=[0.3]")
    ap.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    options.runs(ap)
    options.device(ap)
    ap.add_argument("--resume", action="store_true", help="continue from the run's last.pt (a fresh run if none)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing run in the run directory")
    settings = ap.add_argument_group("settings (defaults < configs/<arch>.yaml < --config < --set < these flags)")
    for key, field in TrainConfig.model_fields.items():
        if key == "model":
            continue
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "metavar": key.upper()}
        choices = list(typing.get_args(field.annotation)) if typing.get_origin(field.annotation) is Literal else None
        if key == "arch":
            choices = list_archs()
        if choices:
            kw.update(choices=choices, metavar=None)
        if typing.get_origin(field.annotation) is list:
            kw["nargs"] = "+"
        if field.annotation is bool:  # `--accept-licence` alone means true; `--compile false` still works
            kw.update(nargs="?", const="true")
        settings.add_argument(_flag(key), help=f"{field.description} [default: {effective.get(key, 'required')}]",
                              **kw)
    return ap


def parse(argv: list[str] | None) -> tuple[TrainConfig, argparse.Namespace]:
    """The validated config and the options that are not settings."""
    args = build_parser(argv).parse_args(argv)
    flags = [(_flag(k), {k: [parse_value(x) for x in v] if isinstance(v, list) else parse_value(v)})
             for k, v in vars(args).items() if k in TrainConfig.model_fields]
    return build_config(_layers(argv) + flags), args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # e.g. where the weights came from
    cfg, a = parse(argv)
    if a.print_config:
        print(yaml.safe_dump(cfg.model_dump(), sort_keys=False), end="")
        return
    run = api.train(cfg, runs=a.runs, device=a.device, resume=a.resume, overwrite=a.overwrite)
    print(f"run: {run}")


if __name__ == "__main__":
    from hpa.cli import run

    run(main)
