"""Generate a synthetic HPA-like dataset in the Kaggle layout (hpa.data.demo says how it is drawn).

    python input_prep/make_demo.py --out-dir data/demo --n-train 2000 --n-test 500 --size 128 --seed 0

Writes `train.csv`, `train/`, `test/`, `sample_submission.csv`, `test_labels.csv` (the test
truth, which real Kaggle data lacks), `demo_duplicates.csv` (the injected near-duplicate
pairs, ground truth for dedup) and `preview.png` (one sample per class). The output is a pure
function of the arguments.
"""

from __future__ import annotations

from pathlib import Path

from hpa import cli
from hpa.data import layout
from hpa.data.demo import make_demo, render  # noqa: F401 (render: importable from here, as before)


def main(argv: list[str] | None = None) -> None:
    ap = cli.Parser(__doc__)
    ap.add_argument("--out-dir", type=Path, required=True, help="output dataset directory")
    ap.add_argument("--n-train", type=cli.positive_int, default=2000, help="training samples")
    ap.add_argument("--n-test", type=cli.positive_int, default=500, help="test samples")
    ap.add_argument("--size", type=int, default=128, help="image side in pixels")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    ap.add_argument("--min-per-class", type=int, default=3, help="forced occurrences of every class per split")
    a = ap.parse_args(argv)
    if a.size < 32:
        ap.error(f"--size {a.size}: must be at least 32")
    make_demo(a.out_dir, a.n_train, a.n_test, a.size, a.seed, a.min_per_class)
    print(f"wrote demo dataset to {a.out_dir} (preview: {layout.demo_file(a.out_dir, 'preview')})")


if __name__ == "__main__":
    cli.run(main)
