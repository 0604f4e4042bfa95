"""Model registry: `--arch` names -> builders of 4-channel networks with a 28-way head.

    model = build_model("se_resnext50", pretrained="weights/se_resnext50_32x4d.pth", head_hidden=[1024],
                        head_dropout=[0.5])

Every arch except `gapnet_pl` is a timm encoder (feature map out) + pooling + buffering head.
The builders take their settings as arguments only: the paper's values live in
`configs/<arch>.yaml` (section `model`) and reach here through the run's saved config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from hpa.data.labels import NUM_CLASSES
from hpa.models.gapnet import GapNetPL
from hpa.models.heads import POOLS, buffering_head, register_input_stats
from hpa.models.pretrained import Pretrained, load_pretrained

log = logging.getLogger(__name__)
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_PUBLISHED_ONLY: set[str] = set()  # networks of published models: bundles hold them, nobody trains them here


def register_model(name: str, *, trainable: bool = True) -> Callable:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = fn
        if not trainable:
            _PUBLISHED_ONLY.add(name)
        return fn
    return deco


def list_archs(*, published: bool = False) -> list[str]:
    """The archs `--arch` takes (each with its configs/<arch>.yaml); with `published`, also the
    networks only published models use (what a bundle may hold)."""
    return sorted(a for a in _REGISTRY if published or a not in _PUBLISHED_ONLY)


def builder(arch: str) -> Callable[..., nn.Module]:
    if arch not in _REGISTRY:
        raise ValueError(f"unknown arch {arch!r}; valid archs: {', '.join(list_archs())}")
    return _REGISTRY[arch]


def encoder_stages(encoder: nn.Module) -> list[list[nn.Parameter]]:
    """The encoder's parameters per stage, in forward order. Stage boundaries are the modules of
    timm's `feature_info` (stem, then each resolution stage); a parameter belongs to the first
    stage whose module ends at or after it, so transition layers go with the stage they feed."""
    names = [f["module"] for f in encoder.feature_info]
    order = {name: i for i, (name, _) in enumerate(encoder.named_modules())}
    ends = []
    for name in names:
        inside = [i for n, i in order.items() if n == name or n.startswith(name + ".")]
        ends.append(max(inside))
    stages: list[list[nn.Parameter]] = [[] for _ in names]
    for mod_name, module in encoder.named_modules():
        for p in module.parameters(recurse=False):
            k = next((j for j, e in enumerate(ends) if order[mod_name] <= e), len(ends) - 1)
            stages[k].append(p)
    return stages


def split_stages(stages: list[list[nn.Parameter]], n: int) -> list[list[nn.Parameter]]:
    """Contiguous stages into `n` groups as even in stage count as possible (earlier groups get
    the extra stage, as fastai's split of a ResNet body after layer2)."""
    return [[p for k in part for p in stages[k]] for part in np.array_split(np.arange(len(stages)), n)]


class HPANet(nn.Module):
    """encoder (N, C, H, W) -> pool (N, C * feat_mult) -> buffering head -> (N, 28) logits."""

    def __init__(self, encoder: nn.Module, num_features: int, pool: str = "acp",
                 head_hidden: list[int] = (), head_dropout: list[float] = (), num_classes: int = NUM_CLASSES,
                 min_input: int = 0, stats: tuple[list[float], list[float]] | None = None):
        super().__init__()
        register_input_stats(self, stats)  # pretrained encoders get the normalisation of their weights
        # Encoders with unpadded convolutions (InceptionV4) reject small inputs; those are
        # zero-padded (black, like the image background) up to `min_input`.
        self.min_input = min_input
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose from {sorted(POOLS)}")
        self.encoder = encoder
        self.pool = POOLS[pool]()
        self.head = buffering_head(num_features * self.pool.feat_mult, list(head_hidden), list(head_dropout),
                                   num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled encoder features the head reads (N, C x feat_mult): what frozen-encoder
        embeddings store (hpa.prediction.embeddings)."""
        if self.normalize:
            x = (x - self.mean) / self.std
        h, w = x.shape[-2:]
        if h < self.min_input or w < self.min_input:
            ph, pw = max(0, self.min_input - h), max(0, self.min_input - w)
            x = nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return self.pool(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def cam_layer(self) -> nn.Module:
        """The layer class activation maps weigh (hpa.prediction.explain): the encoder's last feature map."""
        return self.encoder

    def layer_groups(self, n: int = 2) -> list[list[nn.Parameter]]:
        """Parameter groups for distinct learning rates, split at stage boundaries: n=2 gives
        [encoder, head], n=3 [early stages, late stages, head]."""
        if n not in (2, 3):
            raise ValueError(f"layer groups: n must be 2 or 3, got {n}")
        return split_stages(encoder_stages(self.encoder), n - 1) + [list(self.head.parameters())]


def _timm_encoder(timm_name: str, pretrained: str | None, **kw) -> tuple[nn.Module, int]:
    import timm

    enc = timm.create_model(timm_name, pretrained=False, in_chans=4, num_classes=0, global_pool="", **kw)
    weights = Pretrained.parse(pretrained)
    if weights.kind in ("imagenet", "file"):
        load_pretrained(enc, weights.file(timm_name))
    elif weights.kind == "none":
        log.info("%s: no pretrained weights, random initialisation", timm_name)
    return enc, enc.num_features  # named HPA weights hold a whole network: the builder loads them


# Per-stain mean and std (R, G, B, Y of 8-bit stains scaled to [0, 1]) that published HPA networks
# apply to their own input: the 2018 winner's, from CellProfiling/densenet predict/models.py
# (`DensenetClass.forward`).
STAIN_STATS = {"bestfitting2018": ([0.074598, 0.050630, 0.050891, 0.076287],
                                   [0.122813, 0.085745, 0.129882, 0.119411])}
VARIANTS = ("plain", "bestfitting2018")


def input_stats(timm_name: str, normalize: str) -> tuple[list[float], list[float]] | None:
    """Per-channel mean and std the encoder's pretrained weights expect, for R, G, B, Y. ImageNet's
    yellow takes red's statistics because its first-layer kernel starts as (a scaled copy of) red's."""
    if normalize == "none":
        return None
    if normalize in STAIN_STATS:
        return STAIN_STATS[normalize]
    if normalize != "imagenet":
        raise ValueError(f"normalize: 'imagenet', {', '.join(map(repr, STAIN_STATS))} or 'none', got {normalize!r}")
    import timm

    cfg = timm.models.get_pretrained_cfg(timm_name)
    mean, std = list(cfg.mean), list(cfg.std)
    return mean + mean[:1], std + std[:1]


def _bestfitting_variant(net: HPANet, num_features: int, head_hidden, head_dropout, num_classes: int) -> None:
    """The 2018 winner's DenseNet (CellProfiling/densenet `class_densenet121_large_dropout`): a 2x2
    max-pool after the stem halves every later feature map, so his 1024 px inputs cost what 512 px
    would, and the pooled features pass BatchNorm -> Dropout(0.5) before the head's first Linear."""
    from collections import OrderedDict

    feats = getattr(net.encoder, "features", None)
    if not isinstance(feats, nn.Sequential) or "pool0" not in feats._modules:
        raise ValueError("variant 'bestfitting2018' needs a DenseNet encoder (its stem ends in features.pool0)")
    mods = []
    for name, m in feats.named_children():
        mods.append((name, m))
        if name == "pool0":
            mods.append(("pool0_extra", nn.MaxPool2d(2, stride=2)))  # no tensors: the state dict keeps its names
    net.encoder.features = nn.Sequential(OrderedDict(mods))
    net.head = buffering_head(num_features * net.pool.feat_mult, list(head_hidden), list(head_dropout), num_classes,
                              input_dropout=0.5)


def _timm_arch(name: str, timm_name: str, min_input: int = 0) -> None:
    @register_model(name)
    def build(pretrained: str | None = None, pool: str = "acp", head_hidden=(), head_dropout=(),
              num_classes: int = NUM_CLASSES, normalize: str = "none", variant: str = "plain",
              pretrained_head: bool = False) -> nn.Module:
        """`variant`: the network as the toolkit builds it (`plain`) or as a published model is
        built (`bestfitting2018`, DenseNets). `pretrained_head`: named weights that hold a whole
        network load its head too (else the head starts untrained)."""
        if variant not in VARIANTS:
            raise ValueError(f"variant: one of {', '.join(VARIANTS)}, got {variant!r}")
        enc, nf = _timm_encoder(timm_name, pretrained)
        net = HPANet(enc, nf, pool, head_hidden, head_dropout, num_classes, min_input,
                     input_stats(timm_name, normalize))
        if variant == "bestfitting2018":
            _bestfitting_variant(net, nf, head_hidden, head_dropout, num_classes)
        weights = Pretrained.parse(pretrained)
        if weights.kind == "named":
            from hpa.models import hpa_weights
            from hpa.models.weight_layouts import load_published_cnn

            load_published_cnn(net, weights.file(None), hpa_weights.source(weights.text).layout, head=pretrained_head)
        elif pretrained_head:
            raise ValueError("pretrained_head: only named weights that hold a whole network have a head to load")
        return net
    build.timm_name = timm_name


for _name, _timm in {
    "resnet10t": "resnet10t",  # CPU-sized (4.9M parameters), for ablations
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "densenet121": "densenet121",
    "densenet169": "densenet169",
    # The Cadene pretrainedmodels SE nets; their state dicts load into timm's legacy_* models.
    "se_resnext50": "legacy_seresnext50_32x4d",
    "senet154": "legacy_senet154",
}.items():
    _timm_arch(_name, _timm)
_timm_arch("inception_v4", "inception_v4", min_input=75)  # smallest input its valid convs accept
_timm_arch("convnext_tiny", "convnext_tiny")  # a 2022 ImageNet CNN, so a recipe can mix generations


def _vit_arch(name: str, timm_name: str) -> None:
    @register_model(name)
    def build(pretrained: str | None = None, head_hidden=(), head_dropout=(), num_classes: int = NUM_CLASSES,
              normalize: str = "none", channels: str = "rgby", img_size: int = 224, ln_eps: float = 1e-6,
              layerscale: float | None = None) -> nn.Module:
        """`channels`, `normalize`, `img_size`, `ln_eps` and `layerscale` are what a named HPA weight
        set expects (hpa.models.hpa_weights sets them in the run's config); `img_size` is the side the
        position embeddings are stored at (any input side works)."""
        from functools import partial

        import timm

        from hpa.models import hpa_weights
        from hpa.models.vit import ViTNet, check_channels
        from hpa.models.weight_layouts import load_published

        check_channels(channels)
        # any input side: timm resamples the position embeddings from the stored grid and pads a last partial patch
        enc = timm.create_model(timm_name, pretrained=False, in_chans=len(channels), num_classes=0,
                                dynamic_img_size=True, dynamic_img_pad=True, img_size=img_size, init_values=layerscale,
                                norm_layer=partial(nn.LayerNorm, eps=ln_eps))
        weights = Pretrained.parse(pretrained)
        if weights.kind == "named":
            path = weights.file(timm_name)
            load_published(enc, path, hpa_weights.source(weights.text).layout)
            log.info("%s: %s weights from %s", timm_name, weights.text, path)
        elif weights.kind == "imagenet":
            load_pretrained(enc, weights.file(timm_name))
        elif weights.kind == "file":
            used = load_published(enc, weights.file(None))
            log.info("%s: weights from %s (%s layout)", timm_name, weights.text, used)
        stats = input_stats(timm_name, normalize) if normalize == "imagenet" else None
        return ViTNet(enc, head_hidden, head_dropout, num_classes, stats, channels=channels, normalize=normalize)
    build.timm_name = timm_name


for _name, _timm in {"vit_tiny16": "vit_tiny_patch16_224",  # 5.7M parameters: tests and CPU smoke runs
                     "vit_base16": "vit_base_patch16_224", "vit_large16": "vit_large_patch16_224"}.items():
    _vit_arch(_name, _timm)


@register_model("subcell_vit", trainable=False)
def subcell_vit(pretrained: str | None = None, num_classes: int = 31, channels: str = "rybg", normalize: str = "minmax",
                img_size: int = 448, ln_eps: float = 1e-12, seeds: int = 10,
                encoder: str = "vit_base_patch16_224") -> nn.Module:
    """SubCell's whole classifier (hpa.models.subcell): a published model's network, filled from
    its publisher's files when its bundle is made (hpa.prediction.published); `pretrained` takes none.
    `encoder`: the timm ViT (SubCell's is ViT-B/16; the tests use a tiny one of the same layout)."""
    from functools import partial

    import timm

    from hpa.models.subcell import SubCellNet
    from hpa.models.vit import check_channels

    if Pretrained.parse(pretrained).kind != "none":
        raise ValueError("subcell_vit: its weights come with its published bundle (--bundle subcell-<ch>-<variant>)")
    check_channels(channels)
    enc = timm.create_model(encoder, pretrained=False, in_chans=len(channels), num_classes=0,
                            dynamic_img_size=True, dynamic_img_pad=True, img_size=img_size,
                            norm_layer=partial(nn.LayerNorm, eps=ln_eps))
    return SubCellNet(enc, num_classes, seeds, channels, normalize)


def _tiny_encoder(width: int = 16, stem_stride: int = 2, input_norm: bool = True) -> nn.Sequential:
    # BatchNorm on the input standardises each stain: HPA channels are dim and of unequal brightness.
    layers: list[nn.Module] = [nn.BatchNorm2d(4)] if input_norm else []
    stage_ends = []
    cin = 4
    for k in range(4):
        cout = width * 2 ** k
        stride = stem_stride if k == 0 else 1
        layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True),
                   nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        stage_ends.append(str(len(layers) - 1))
        if k < 3:
            layers.append(nn.MaxPool2d(2))
        cin = cout
    enc = nn.Sequential(*layers)
    enc.feature_info = [{"module": m} for m in stage_ends]  # timm's stage description, for layer groups
    return enc


@register_model("tiny_cnn")
def tiny_cnn(pretrained: str | None = None, pool: str = "acp", head_hidden=(), head_dropout=(),
             num_classes: int = NUM_CLASSES, width: int = 16, stem_stride: int = 2,
             input_norm: bool = True) -> nn.Module:
    """A 4-stage plain CNN (~0.3M parameters at width 16) for tests and the CPU demo."""
    enc = _tiny_encoder(width, stem_stride, input_norm)
    path = Pretrained.parse(pretrained).file(None)
    if path:
        load_pretrained(enc, path)
    return HPANet(enc, width * 8, pool, head_hidden, head_dropout, num_classes)


@register_model("gapnet_pl")
def gapnet_pl(pretrained: str | None = None, num_classes: int = NUM_CLASSES, extra_first_stage: int = 0,
              fc: int = 256, dropout: float = 0.3) -> nn.Module:
    net = GapNetPL(4, num_classes, extra_first_stage, fc, dropout)
    path = Pretrained.parse(pretrained).file(None)
    if path:
        load_pretrained(net, path)
    return net


def build_model(arch: str, **settings) -> nn.Module:
    """Build `arch` from explicit settings (the run config's `model` section, `pretrained`)."""
    return builder(arch)(**{k: v for k, v in settings.items() if v is not None})
