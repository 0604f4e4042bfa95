"""Embed a dataset (or a folder of own images) with a frozen encoder, once, for frozen-encoder heads.

    python embed.py --data-dir data/hpa --pretrained dino4cells-hpa-fov --size 224
    python embed.py --data-dir data/hpa --pretrained subcell-rybg-mae --size 448 --tta 8
    python embed.py --images my_images/ --out my_embeddings/ --pretrained dino4cells-hpa-fov --size 224

Every train, external and test sample of the prepared store at --size (input_prep/prepare.py
--size N first) goes through the encoder under each of the --tta dihedral views; what is stored per
view is what the paper's head reads (ACP of the feature map, and a ViT's class token), as float16
in <data-dir>/embeddings/<encoder>_<size>/<split>.npy (N x views x D) with <split>_ids.csv and
provenance.json. Interrupted, the same command resumes at the last finished chunk of 512 images.
Named HPA weights (README "HPA-pretrained encoders") bring their arch, channels and normalisation.
"""

from __future__ import annotations

from pathlib import Path

from hpa import cli
from hpa.core.runtime import pick_device
from hpa.errors import ConfigError
from hpa.models import hpa_weights, list_archs
from hpa.prediction.embeddings import Encoder, embed_dataset, embed_folder
from hpa.prediction.inference import parse_tta


def main(argv: list[str] | None = None) -> None:
    ap = cli.Parser(__doc__)
    ap.add_argument("--pretrained", default="none", help="named HPA weights (e.g. dino4cells-hpa-fov), imagenet, none "
                    "or a weights file")
    ap.add_argument("--arch", choices=list_archs(), help="the encoder's arch (implied by named HPA weights)")
    ap.add_argument("--size", type=cli.positive_int, required=True, help="side the images are embedded at (and the "
                    "prepared store read)")
    ap.add_argument("--tta", default="8", help="dihedral views per image: a count 1..8 or names [8]")
    ap.add_argument("--data-dir", type=Path, help="prepared dataset to embed")
    ap.add_argument("--splits", nargs="+", choices=("train", "external", "test"), help="default: every present split")
    ap.add_argument("--images", type=Path, help="embed this folder of own images instead (with --out)")
    ap.add_argument("--out", type=Path, help="with --images: directory the embeddings go to")
    ap.add_argument("--batch-size", type=cli.positive_int, default=32, help="images per forward pass")
    ap.add_argument("--amp", choices=("off", "bf16"), default="off", help="precision of the forward passes")
    ap.add_argument("--workers", type=cli.non_negative_int, default=cli.DEFAULT_WORKERS, help="loader processes")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--accept-licence", action="store_true", help="accept the licence of weights that need it "
                    "(cell-dino-hpa)")
    a = ap.parse_args(argv)
    arch = a.arch
    if hpa_weights.is_named(a.pretrained):
        arch = arch or hpa_weights.source(a.pretrained).arch
    if not arch:
        raise ConfigError("--arch: required unless --pretrained names HPA weights")
    if (a.images is None) == (a.data_dir is None):
        raise ConfigError("give either --data-dir (a dataset) or --images with --out (a folder)")
    if a.images is not None and a.out is None:
        raise ConfigError("--images: needs --out (the directory the embeddings go to)")
    enc = Encoder(arch, a.pretrained, a.size, parse_tta(a.tta), a.amp, a.accept_licence)
    common = dict(batch_size=a.batch_size, device=pick_device(a.device), workers=a.workers)
    if a.images is not None:
        print(f"embeddings: {embed_folder(a.images, a.out, enc, **common)}")
    else:
        print(f"embeddings: {embed_dataset(a.data_dir, enc, splits=a.splits, **common)}")


if __name__ == "__main__":
    cli.run(main)
