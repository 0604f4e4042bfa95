"""Export a finished recipe's ensemble as one shareable bundle (Hugging Face model layout), and
optionally as a BioImage Model Zoo package, or upload it to the Hub.

    python export_bundle.py --from work/hpa --out my-bundle
    python export_bundle.py --from work/hpa --out my-bundle --members se_resnext50_768 --folds 0 1
    python export_bundle.py --from work/hpa --out my-bundle --bioimageio my-bundle.bioimageio.zip
    python export_bundle.py --out my-bundle --push my-lab/hpa-ensemble       # an existing bundle, uploaded

The bundle (config.json, README.md model card, weights/<member>/f<fold>.safetensors) predicts a
folder of images anywhere: `python predict_tta.py --bundle my-bundle --images DIR --out preds.csv`.
"""

from __future__ import annotations

from pathlib import Path

from hpa import cli


def main(argv: list[str] | None = None) -> None:
    ap = cli.Parser(__doc__)
    ap.add_argument("--from", dest="source", type=Path, help="a recipe output directory (blend.json, runs/, "
                    "predictions/)")
    ap.add_argument("--out", type=Path, required=True, help="the bundle directory to write (or, with --push alone, "
                    "to upload)")
    ap.add_argument("--members", nargs="+", help="keep only these members (<arch>_<size>); default: all")
    ap.add_argument("--folds", type=cli.non_negative_int, nargs="+", help="keep only these folds; default: all")
    ap.add_argument("--license", default="cc-by-sa-3.0", help="the model card's licence (Hub identifier); HPA "
                    "images are CC BY-SA 3.0")
    ap.add_argument("--datasets", nargs="+", default=[], metavar="HUB_ID",
                    help="Hub dataset ids the model card names (the card's `datasets`; none by default: the HPA "
                         "images are not a Hub dataset)")
    ap.add_argument("--bioimageio", type=Path, metavar="ZIP", help="also write a BioImage Model Zoo package "
                    "(TorchScript, with the TTA and the blend inside)")
    ap.add_argument("--push", metavar="REPO_ID", help="upload the bundle to the Hugging Face Hub (needs a login)")
    a = ap.parse_args(argv)
    from hpa.prediction.bundle import export_bundle, push_bundle

    if a.source is None and not a.push:
        ap.error("--from is required (or --push to upload an existing bundle)")
    if a.source is not None:
        export_bundle(a.source, a.out, members=a.members, folds=a.folds, license=a.license, datasets=a.datasets)
    if a.bioimageio:
        from hpa.prediction.bioimageio import export_bioimageio

        print(f"bioimage.io package: {export_bioimageio(a.out, a.bioimageio)}")
    if a.push:
        push_bundle(a.out, a.push)


if __name__ == "__main__":
    cli.run(main)
