"""Export a finished recipe's ensemble as one shareable bundle (Hugging Face model layout), and
optionally as a BioImage Model Zoo package, or upload it to the Hub.

    python export_bundle.py --from work/hpa --out-dir my-bundle
    python export_bundle.py --from work/hpa --out-dir my-bundle --members se_resnext50_768 --folds 0 1
    python export_bundle.py --from work/hpa --out-dir my-bundle --bioimageio my-bundle.bioimageio.zip
    python export_bundle.py --out-dir my-bundle --push my-lab/hpa-ensemble      # an existing bundle, uploaded

The bundle (config.json, README.md model card, one safetensors file per member and fold) predicts a
folder of images anywhere: `python predict_tta.py --bundle my-bundle --images DIR --out preds.csv`.
"""

from __future__ import annotations

from pathlib import Path

from hpa import api
from hpa.cli import Parser, options


def build_parser() -> Parser:
    ap = Parser(__doc__, "export_bundle.py")
    ap.add_argument("--from", dest="source", type=Path, help="a recipe output directory (blend.json, runs/, "
                    "predictions/)")
    options.out_dir(ap, "the bundle folder to write (or, without --from, the existing bundle to package or upload)",
                    required=True)
    ap.add_argument("--members", nargs="+", help="keep only these members (<arch>_<size>) [all]")
    options.folds(ap, "keep only these folds [all]")
    ap.add_argument("--licence", default="cc-by-sa-3.0", help="the model card's licence (a Hub licence identifier; "
                    "HPA images are CC BY-SA 3.0)")
    ap.add_argument("--datasets", nargs="+", default=[], metavar="HUB_ID",
                    help="Hub dataset ids the model card names (none by default: the HPA images are not a Hub "
                         "dataset)")
    ap.add_argument("--bioimageio", type=Path, metavar="ZIP", help="also write a BioImage Model Zoo package "
                    "(TorchScript, with the TTA and the blend inside)")
    ap.add_argument("--push", metavar="REPO_ID", help="upload the bundle to the Hugging Face Hub (needs a login)")
    return ap


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    done = api.export_bundle(a.source, a.out_dir, members=a.members, folds=a.folds, licence=a.licence,
                             datasets=a.datasets, bioimageio=a.bioimageio, push=a.push)
    made = {"bioimage.io package": done.bioimageio, "on the Hub": done.hub_url}  # the bundle: said as it is written
    for what, value in made.items():
        if value:
            print(f"{what}: {value}")


if __name__ == "__main__":
    from hpa.cli import run

    run(main)
