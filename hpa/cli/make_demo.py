"""Generate a synthetic HPA-like dataset in the Kaggle layout (hpa.data.demo says how it is drawn).

    python input_prep/make_demo.py --out-dir data/demo --n-train 2000 --n-test 500 --size 128 --seed 0

Writes `train.csv`, `train/`, `test/`, `sample_submission.csv`, `test_labels.csv` (the test
truth, which real Kaggle data lacks), `demo_duplicates.csv` (the injected near-duplicate
pairs, ground truth for dedup), `preview.png` (one sample per class) and `cells/` (the drawn cells:
a 16-bit label mask per image and the classes each cell shows, the truth of per-cell prediction).
The output is a pure function of the arguments.
"""

from __future__ import annotations

from pathlib import Path

from hpa import api
from hpa.cli import Parser, options
from hpa.data import layout


def build_parser() -> Parser:
    ap = Parser(__doc__, "input_prep/make_demo.py")
    options.out_dir(ap, "the dataset folder to write", required=True)
    ap.add_argument("--n-train", type=options.positive_int, default=2000, help="training samples")
    ap.add_argument("--n-test", type=options.positive_int, default=500, help="test samples")
    ap.add_argument("--size", type=options.positive_int, default=128, help="image side in pixels (at least 32)")
    options.seed(ap)
    ap.add_argument("--min-per-class", type=options.non_negative_int, default=3,
                    help="forced occurrences of every class per split")
    ap.add_argument("--partial-cells", type=float, default=0.0, metavar="P",
                    help="show each class in each cell only with probability 1 - P, as real fields show a protein in "
                         "some cells [0: in every cell]")
    return ap


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    out = api.make_demo(a.out_dir, n_train=a.n_train, n_test=a.n_test, size=a.size, seed=a.seed,
                        min_per_class=a.min_per_class, partial_cells=a.partial_cells)
    print(f"wrote demo dataset to {out} (preview: {layout.demo_file(Path(out), 'preview')})")


if __name__ == "__main__":
    from hpa.cli import run

    run(main)
