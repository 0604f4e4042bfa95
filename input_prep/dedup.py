"""Find near-duplicate samples across train, external and test by perceptual hashes.

    python input_prep/dedup.py --data-dir data/hpa --out data/hpa/dedup [--threshold 16] [--size 768]

A pair is a near-duplicate when the 64-bit perceptual hashes (pHash, hpa/data/hashing.py) of its red,
green and blue channels differ in at most --threshold of their 192 bits in total. (1st place of
the 2018 competition required each channel's hash within a bound; a dim channel's hash is
noisier, though, and the summed distance tolerates one noisy channel. On the 8 real samples,
rescaled, JPEG re-encoded and brightened copies differ in 0-6 bits and different samples in 78 or
more; on the demo, its injected copies in 0-4 and different samples in 28 or more.)
Hashes are taken from the prepared images (prepared/<size>/) when they exist, else from the
raw files. Writes to --out:
- duplicate_pairs.csv   Id_a,Id_b,split_a,split_b,distance (bits, summed over channels)
- duplicate_groups.csv  Id,group (connected components; a lone sample is its own group)
- leaks.csv             test_Id,train_Id,distance,Target: test samples with a labelled twin
- hashes.csv            Id,split,h_red,h_green,h_blue
"""

from __future__ import annotations

from pathlib import Path

from hpa import cli
from hpa.data.dedup import find_duplicates


def main(argv: list[str] | None = None) -> None:
    ap = cli.Parser(__doc__)
    ap.add_argument("--data-dir", type=Path, required=True, help="dataset directory")
    ap.add_argument("--out-dir", type=Path, required=True, help="where the pair, group, leak and hash tables go")
    ap.add_argument("--threshold", type=int, default=16, help="max differing bits over r, g, b (0..192)")
    ap.add_argument("--size", type=cli.positive_int, help="hash prepared/<size>/ images instead of raw files")
    ap.add_argument("--workers", type=cli.positive_int, default=cli.DEFAULT_WORKERS, help="worker processes")
    a = ap.parse_args(argv)
    find_duplicates(a.data_dir, a.out_dir, a.threshold, a.size, a.workers)


if __name__ == "__main__":
    cli.run(main)
