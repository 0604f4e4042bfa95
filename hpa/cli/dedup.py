"""Find near-duplicate samples across train, external and test by perceptual hashes.

    python input_prep/dedup.py --data-dir data/hpa --out-dir data/hpa/dedup [--threshold 16] [--size 768]

A pair is a near-duplicate when the 64-bit perceptual hashes (pHash, hpa/data/hashing.py) of its red,
green and blue channels differ in at most --threshold of their 192 bits in total. (1st place of
the 2018 competition required each channel's hash within a bound; a dim channel's hash is
noisier, though, and the summed distance tolerates one noisy channel. On the 8 real samples,
rescaled, JPEG re-encoded and brightened copies differ in 0-6 bits and different samples in 78 or
more; on the demo, its injected copies in 0-4 and different samples in 28 or more.)
With --size, hashes are taken from the prepared images (prepared/<size>/) where that store
exists; otherwise from the raw files. Writes to --out-dir:
- duplicate_pairs.csv   Id_a,Id_b,split_a,split_b,distance (bits, summed over channels)
- duplicate_groups.csv  Id,group (connected components; a lone sample is its own group)
- leaks.csv             test_Id,train_Id,distance,Target: test samples with a labelled twin
- hashes.csv            Id,split,h_red,h_green,h_blue
"""

from __future__ import annotations

from hpa import api
from hpa.cli import Parser, options


def build_parser() -> Parser:
    ap = Parser(__doc__, "input_prep/dedup.py")
    options.data_dir(ap)
    options.out_dir(ap, "where the pair, group, leak and hash tables go", required=True)
    ap.add_argument("--threshold", type=options.non_negative_int, default=16,
                    help="max differing bits over r, g, b (0..192)")
    ap.add_argument("--size", type=options.positive_int, help="hash prepared/<size>/ images instead of raw files")
    options.workers(ap)
    return ap


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    pairs = api.find_duplicates(a.data_dir, a.out_dir, threshold=a.threshold, size=a.size, workers=max(a.workers, 1))
    print(f"{len(pairs)} near-duplicate pairs; tables in {a.out_dir}")


if __name__ == "__main__":
    from hpa.cli import run

    run(main)
