"""The size of a folder's report (report.html and report_files/) on the demo's test fields, with this
checkout's code and, with --before, an earlier checkout's, on the same fields and the same model.

    git archive 2770643 | (mkdir -p /tmp/before && tar -x -C /tmp/before)   # the report before #35
    python bench/bench_report.py --before /tmp/before [--n-test 500]

Makes the demo (300 training and --n-test test fields at 128 px, seed 0) and trains tiny_cnn at 64
px on one fold for 3 epochs (a model that predicts many classes per field, so many maps: the report
at its largest), then runs `predict_tta.py --images` on the test folder with each checkout, and
with this one again with `--labels` and `--cells`: files, bytes and seconds of each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import write_section

ROOT = Path(__file__).resolve().parents[1]


def report(code: Path, work: Path, name: str, extra: list[str]) -> tuple[int, int, float]:
    """(files, bytes, seconds) of the report `code`'s predict_tta.py writes for the demo's test folder."""
    out = work / name / "preds.csv"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(code / "predict_tta.py"), "--arch", "tiny_cnn", "--size", "64", "--folds", "0",
                    "--runs", str(work / "runs"), "--images", str(work / "demo" / "test"), "--out", str(out),
                    "--workers", "0", "--device", "cpu", *extra], cwd=code, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(code)})
    seconds = time.perf_counter() - t0
    files = [out.with_name("report.html"), *(p for p in out.with_name("report_files").rglob("*") if p.is_file())]
    return len(files), sum(p.stat().st_size for p in files), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, help="an earlier checkout to measure on the same fields and model")
    ap.add_argument("--n-test", type=int, default=500)
    a = ap.parse_args()
    import hpa

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        demo = work / "demo"
        hpa.make_demo(demo, n_train=300, n_test=a.n_test, size=128, seed=0)
        hpa.prepare(demo, size=64, echo=lambda _: None)
        hpa.make_folds(demo, n_folds=2, echo=lambda _: None)
        hpa.train_fold("tiny_cnn", fold=0, size=64, data_dir=demo, runs=work / "runs", echo=lambda _: None, epochs=3,
                       batch_size=32, workers=0, amp="off", pretrained="none")
        rows = []
        if a.before:
            rows.append(("before (--before checkout)", *report(a.before.resolve(), work, "before", [])))
        rows.append(("this checkout", *report(ROOT, work, "after", [])))
        rows.append(("this checkout, --labels and --cells", *report(ROOT, work, "cells", [
            "--labels", str(demo / "test_labels.csv"), "--cells"])))
    lines = [f"| {name} | {files:,} | {size / 1e6:.1f} | {s:.0f} |" for name, files, size, s in rows]
    body = (f"The demo's {a.n_test} test fields (128 px), tiny_cnn at 64 px (3 epochs, one fold: about 13 predicted "
            "classes, so 13 class maps, per field). MB are 10^6 bytes of report.html and report_files/; the seconds "
            "are each whole command's on a machine shared with other work, not a comparison of speed.\n\n"
            "| report | files | MB | seconds |\n"
            "|---|---|---|---|\n" + "\n".join(lines))
    if a.before:
        body += (f"\n\nThis checkout's report is {rows[0][2] / rows[1][2]:.1f}x smaller in "
                 f"{rows[0][1] / rows[1][1]:.0f}x fewer files.")
    write_section("report: size of a folder's report.html", "python bench/bench_report.py" +
                  (" --before CHECKOUT" if a.before else "") + f" --n-test {a.n_test}", body)


if __name__ == "__main__":
    main()
