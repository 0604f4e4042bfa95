"""Embed a dataset (or a folder of own images) with a frozen encoder, once, for frozen-encoder heads.

    python embed.py --data-dir data/hpa --pretrained dino4cells-hpa-fov --size 224
    python embed.py --data-dir data/hpa --pretrained subcell-rybg-mae --size 448 --tta 8
    python embed.py --images my_images/ --out-dir my_embeddings/ --pretrained dino4cells-hpa-fov --size 224

Every train, external and test sample of the prepared store at --size (input_prep/prepare.py
--size N first) goes through the encoder under each of the --tta dihedral views; what is stored per
view is what the paper's head reads (ACP of the feature map, and a ViT's class token), as float16
in <data-dir>/embeddings/<encoder>_<size>/<split>.npy (N x views x D) with <split>_ids.csv and
provenance.json. Interrupted, the same command resumes at the last finished chunk of 512 images.
Named HPA weights (docs: HPA-pretrained encoders) bring their arch, channels and normalisation.
"""

from __future__ import annotations

from hpa import api
from hpa.cli import Parser, options
from hpa.models import list_archs
from hpa.prediction.embeddings import Encoder


def build_parser() -> Parser:
    ap = Parser(__doc__, "embed.py")
    ap.add_argument("--pretrained", default="none", help="named HPA weights (e.g. dino4cells-hpa-fov), imagenet, none "
                    "or a weights file")
    ap.add_argument("--arch", choices=list_archs(), help="the encoder's arch (implied by named HPA weights)")
    ap.add_argument("--size", type=options.positive_int, required=True, help="side the images are embedded at (and "
                    "the prepared store read)")
    options.tta(ap, default="8")
    options.data_dir(ap, required=False, help="prepared dataset to embed")
    ap.add_argument("--splits", nargs="+", choices=("train", "external", "test"), help="[every present split]")
    options.images(ap, "embed this folder of own images instead (with --out-dir)")
    options.out_dir(ap, "with --images: the folder the embeddings go to")
    options.batch_size(ap)
    options.amp(ap)
    options.workers(ap)
    options.device(ap)
    options.accept_licence(ap)
    return ap


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    enc = Encoder.named(a.pretrained, arch=a.arch, size=a.size, tta=a.tta, amp=a.amp or "bf16",
                        accept_licence=a.accept_licence)
    store = api.embed(enc, data_dir=a.data_dir, images=a.images, out_dir=a.out_dir, splits=a.splits,
                      batch_size=a.batch_size, workers=a.workers, device=a.device)
    print(f"embeddings: {store}")


if __name__ == "__main__":
    from hpa.cli import run

    run(main)
