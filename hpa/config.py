"""One typed training config. Layers merge in this order, each over the one before:
the field defaults below (the paper's shared settings, the one place they are written; `python
train_fold.py --help` lists them), `configs/<arch>.yaml`, `--config FILE`, `--set key=value`, then
the flags named after the keys (`--batch-size 16`).

Validation is pydantic's (unknown keys forbidden, values coerced to the field's type and
range-checked); what is ours is that every error is one line naming the layer (file or flag)
that set the bad key. A run saves the merged config as `config.yaml`: passing it back as
`--config` rebuilds the same run, and prediction builds the model from it, never from today's
`configs/`.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpa.core.runtime import AMP_MODES, DEFAULT_WORKERS
from hpa.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # package data; ./configs links here
# the losses a config may name (hpa.training.losses builds them): here, so that reading a config (prediction
# does) does not import the training code
LOSSES = ("bce", "focal", "eloss_bce", "eloss_focal")


class TrainConfig(BaseModel):
    """Every setting that decides what a run learns (flags such as --device or --resume, which do
    not change the result, are not here)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    arch: str = Field(description="model name from the registry (models.list_archs())")
    fold: int = Field(0, ge=0, description="validation fold; the others train")
    data_dir: str | None = Field(None, description="dataset directory (train.csv, prepared/, folds.csv)")
    folds_csv: str | None = Field(None, description="Id,fold table (null: <data_dir>/folds.csv)")
    size: int = Field(768, ge=8, description="side of the prepared images to read")
    crop: int | None = Field(512, ge=8, description="random training crop side for images stored at `size`; "
                                                    "other stored sides get the same fraction; null: whole images")
    crop_large: int | None = Field(768, ge=8, description="crop side for images stored larger than `size` (3072 px "
                                                          "sources); null: crop x side / size")
    epochs: int = Field(16, ge=1, description="training epochs")
    batch_size: int = Field(32, ge=1, description="effective batch: the samples of one optimizer step, over all "
                                                  "processes and micro-batches (the paper's batch size)")
    micro_batch: int | Literal["auto"] = Field("auto", description="samples per forward/backward pass of one "
                                                                   "process; gradients accumulate over the rest of the "
                                                                   "batch. auto: the largest that fits each stored "
                                                                   "side on the GPU (probed); on CPU, the whole share")
    micro_batches: dict[int, int] | None = Field(None, description="micro-batch per stored side, as `auto` chose it "
                                                                   "(recorded by the run, reused on resume)")
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="optimizer")
    lr: float = Field(0.01, gt=0, description="learning rate of the last layer group (the head)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(1e-6, ge=0, description="weight decay")
    lr_groups: list[float] = Field([0.3333, 1.0], min_length=2, max_length=3,
                                   description="LR multipliers: [encoder, head] or [early, late, head]")
    layer_decay: float | None = Field(None, gt=0, le=1, description="vision transformers: layer-wise LR decay, block "
                                                                     "i of L at lr x decay^(L + 1 - i) (null: "
                                                                     "lr_groups)")
    cycle_epochs: float | None = Field(4, gt=0, description="epochs per cosine cycle (null: epochs / cycles)")
    cycles: int | None = Field(None, ge=1, description="cosine cycles (null: enough to cover epochs)")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="LR at a cycle's end, as a fraction of the base")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up batches")
    oversample_target: float = Field(0.03, ge=0, le=1,
                                     description="rare-class oversampling: classes below this share are repeated")
    oversample_max: int = Field(4, ge=1, description="... at most this many times (1 = off)")
    loss: Literal[LOSSES] = Field("eloss_focal", description="loss")
    alpha_e: float = Field(0.999, ge=0, lt=1, description="E-loss alpha (0 = no class weighting)")
    gamma: float = Field(2.0, ge=0, description="focal gamma")
    focal_alpha: float | None = Field(None, ge=0, le=1, description="focal alpha-balancing (null = off)")
    hard_k: int | float | None = Field(0.5, description="hard sampler: keep the top-k losses of a batch "
                                                        "(int count or fraction in (0, 1]; null = all)")
    amp: Literal[AMP_MODES] = Field("bf16", description="mixed precision (fp16 needs CUDA)")
    channels_last: bool = Field(True, description="channels-last memory layout")
    compile: bool = Field(False, description="torch.compile the model (the first steps compile it)")
    sync_bn: bool = Field(True, description="torchrun on GPUs: BatchNorm statistics over all GPUs")
    grad_clip: float | None = Field(None, gt=0, description="gradient norm clip (null = off)")
    workers: int = Field(DEFAULT_WORKERS, ge=0, description="DataLoader worker processes (does not change the result)")
    seed: int = Field(0, description="seed of weights, data order and augmentation")
    external: Literal["auto", "off"] = Field("auto", description="train on Kaggle train + HPAv18 external samples "
                                                                 "when <data_dir>/external.csv exists (auto), or not")
    l1: float = Field(0.0, ge=0, description="L1 penalty on weights (GapNet-PL)")
    l2: float = Field(0.0, ge=0, description="L2 penalty on weights (GapNet-PL)")
    pretrained: str | None = Field("imagenet", description="encoder weights: imagenet (the arch's timm weights, from "
                                                           "the Hugging Face or torch hub cache, downloaded once when "
                                                           "online), none, a .pth/.safetensors file, or named HPA "
                                                           "weights (dino4cells-hpa-fov, subcell-rybg-mae, ...: "
                                                           "docs/guide/hpa-encoders.md)")
    accept_licence: bool = Field(False, description="accept the licence of weights that need it (cell-dino-hpa: "
                                                    "non-commercial research use)")
    find_lr: Literal["off", "report", "use"] = Field("off", description="LR range test before training: "
                                                                        "report the LR, or also train with it")
    find_lr_steps: int = Field(100, ge=2, description="LR range test batches")
    limit_batches: int = Field(0, ge=0, description="stop each epoch after N batches (smoke runs; 0 = all)")
    model: dict[str, Any] = Field(default_factory=dict, description="model builder settings (head, pooling)")

    @field_validator("micro_batch", mode="before")
    @classmethod
    def _micro(cls, v: Any) -> Any:
        if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or v < 2):
            raise ValueError(f"must be auto or an int >= 2, got {v!r} (a micro-batch of one sample leaves BatchNorm "
                             "a single value per channel)")
        return v

    @field_validator("micro_batches", mode="before")
    @classmethod
    def _micro_map(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, dict) or not v:
            raise ValueError(f"must be a map of stored side to micro-batch, e.g. {{768: 16, 1024: 8}}, got {v!r}")
        for side, m in v.items():
            bad = [x for x in (side, m) if isinstance(x, bool) or not isinstance(x, int | str)
                   or not (str(x).isascii() and str(x).isdigit())]
            if bad or int(side) < 8 or int(m) < 2:
                raise ValueError(f"{side}: {m}: a stored side >= 8 and a micro-batch >= 2 are needed, e.g. "
                                 "{768: 16, 1024: 8}")
        return v

    @field_validator("data_dir", "folds_csv")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        # saved absolute, so that the run predicts and resumes from any working directory
        return os.path.abspath(v) if v else v

    @field_validator("hard_k")
    @classmethod
    def _hard_k(cls, v: int | float | None) -> int | float | None:
        if v is not None and (v <= 0 or (isinstance(v, float) and v > 1)):
            raise ValueError("must be an int >= 1, a fraction in (0, 1] or null")
        return v

    @model_validator(mode="after")
    def _crop_fits(self) -> TrainConfig:
        if self.crop is not None and self.crop > self.size:
            raise ValueError(f"crop {self.crop} is larger than size {self.size}: set crop <= size, or null")
        return self

    @field_validator("amp", "find_lr", "external", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        from hpa.models import list_archs

        if v not in list_archs():
            raise ValueError(f"unknown arch {v!r}; valid archs: {', '.join(list_archs())}")
        return v


# Settings a resumed run may change: they do not alter what is learned (micro-batches change the
# BatchNorm statistics of a step, not the optimizer step's batch; see docs/guide/gpus-slurm.md).
RESUMABLE_CHANGES = frozenset({"workers", "data_dir", "micro_batch", "micro_batches", "compile", "accept_licence"})


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {'a folder, not a config file' if path.is_dir() else 'config file not found'}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({' '.join(str(e).split())})") from e
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a YAML config is text)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of setting: value")
    return data


def save_yaml(path: Path, data: dict) -> None:
    from hpa.core.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def parse_value(text: str) -> Any:
    """A flag's text as YAML (`0.5`, `null`, `[512, 256]`, `true`), so flags, `--set` and files agree."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_set(items: list[str]) -> dict:
    """`--set key=value` pairs (dotted keys reach into `model`) -> a nested dict."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = parse_value(value)
    return out


def arch_layers(arch: str | None, config_dir: Path = CONFIG_DIR) -> list[tuple[str, dict]]:
    """(source, settings) of configs/<arch>.yaml (the shared defaults are TrainConfig's own)."""
    layers = []
    if arch and (config_dir / f"{arch}.yaml").is_file():
        layers.append((str(config_dir / f"{arch}.yaml"), read_yaml(config_dir / f"{arch}.yaml")))
    return layers


def merge_layers(layers: list[tuple[str, dict]]) -> tuple[dict, dict[str, str]]:
    """Merge (source, settings) layers in order. Returns the merged dict and the source of each key
    (`model.<k>` for model settings); an unknown key is an error naming its source."""
    known = set(TrainConfig.model_fields)
    merged: dict = {}
    origin: dict[str, str] = {}
    for source, data in layers:
        for key, value in data.items():
            if key not in known:
                raise ConfigError(f"{source}: unknown setting {key!r}{_did_you_mean(key, known)}")
            if key == "model":
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: 'model' must be a mapping")
                origin.update({f"model.{k}": source for k in value})
            origin[key] = source
        merged = deep_merge(merged, data)
    return merged, origin


def _did_you_mean(key: str, known: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; valid settings: {', '.join(sorted(known))}"


def build_config(layers: list[tuple[str, dict]]) -> TrainConfig:
    """Merge the layers and validate; an error names the setting and the layer that set it."""
    merged, origin = merge_layers(layers)
    merged = weights_defaults(merged, origin)
    try:
        cfg = TrainConfig(**merged)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "config"
        top = str(err["loc"][0]) if err["loc"] else ""
        source = origin.get(key, origin.get(top, "config"))
        if not err["loc"]:  # the one check across settings: crop against size
            msg = err["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{msg} (crop from {origin.get('crop', 'defaults')}, size from "
                              f"{origin.get('size', 'defaults')})") from None
        if err["type"] == "missing":
            raise ConfigError(f"--{key.replace('_', '-')}: required") from None
        got = f" (got {err['input']!r})"
        raise ConfigError(f"{source}: setting {key!r}: {err['msg']}{got}") from None
    check_model_settings(cfg.arch, cfg.model, origin)
    return apply_weight_settings(cfg, origin)


def weights_defaults(merged: dict, origin: dict[str, str]) -> dict:
    """Named HPA weights were trained at their own side: a crop nobody set defaults to it (at most
    the stored size), and the crop of larger stored images scales with it, instead of the paper's
    512 of 768 px, which a 224 px encoder cannot take."""
    from hpa.models import hpa_weights
    from hpa.models.pretrained import Pretrained

    weights = Pretrained.parse(merged.get("pretrained", TrainConfig.model_fields["pretrained"].default))
    if weights.kind != "named" or not hpa_weights.source(weights.text).fixed_side:
        return merged
    native = hpa_weights.source(weights.text).img_size
    size = merged.get("size", TrainConfig.model_fields["size"].default)
    out = dict(merged)
    if "crop" not in origin and isinstance(size, int):
        out["crop"] = min(native, size)
    if "crop_large" not in origin:
        out["crop_large"] = None
    return out


def apply_weight_settings(cfg: TrainConfig, origin: dict[str, str]) -> TrainConfig:
    """Named HPA weights bring their own input settings (channel order, normalisation, trained side):
    they replace what configs/ set, and a user's different value is refused, never silently used."""
    from hpa.models import hpa_weights
    from hpa.models.pretrained import Pretrained

    weights = Pretrained.parse(cfg.pretrained)
    if weights.kind != "named":
        return cfg
    w = hpa_weights.source(weights.text)
    where = origin.get("pretrained", "config")
    if cfg.arch != w.arch:
        raise ConfigError(f"{where}: pretrained {w.name} is a {w.arch} encoder; use --arch {w.arch} (got {cfg.arch})")
    hpa_weights.require_acceptance(w.name, cfg.accept_licence)
    for k, v in w.model_settings().items():
        src = origin.get(f"model.{k}", "")
        if k in cfg.model and cfg.model[k] != v and src and not src.startswith(str(CONFIG_DIR)):
            raise ConfigError(f"{src}: model setting {k}={cfg.model[k]!r} contradicts the {w.name} weights, which "
                              f"expect {v!r}; leave it unset")
    cfg.model = {**cfg.model, **w.model_settings()}
    return cfg


def check_model_settings(arch: str, settings: dict, origin: dict[str, str] | None = None) -> None:
    """Every `model` key must be a parameter of the arch's builder."""
    from hpa.models import builder

    params = inspect.signature(builder(arch)).parameters
    for k in settings:
        if k not in params or k == "pretrained":
            where = (origin or {}).get(f"model.{k}", "config")
            valid = ", ".join(p for p in params if p != "pretrained")
            raise ConfigError(f"{where}: model setting {k!r} does not exist for arch {arch!r}; valid: {valid}")


def load_arch_config(arch: str, **overrides) -> TrainConfig:
    """The config of `arch` from configs/, with keyword overrides (tests, benchmarks)."""
    return build_config(arch_layers(arch) + [("overrides", {"arch": arch, **overrides})])


def changed_settings(old: dict, new: TrainConfig) -> list[str]:
    """`key old -> new` for every setting that differs, except those a resume may change."""
    now = new.model_dump()
    # with find_lr "use" the saved lr is the one the range test chose
    free = RESUMABLE_CHANGES | ({"lr"} if now["find_lr"] == old.get("find_lr") == "use" else set())
    return [f"{k} {old.get(k)!r} -> {now[k]!r}" for k in now if k not in free and old.get(k) != now[k]]
