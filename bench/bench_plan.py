"""The foundation recipe's plan beside the paper recipe's, on one device.

    python bench/bench_plan.py [--recipes paper foundation] [--device auto]

Runs `--plan` (hpa.pipeline.recipe.plan_recipe: timed steps of every member, trains nothing) of each
recipe against the real Kaggle 2018 label tables (train.csv 31,072 rows, the 11,702 test Ids, the
74,606 HPAv18 external rows, from ../shared/data/kaggle-hpa-2018), so both project the same sample
counts on the same device, and writes their per-member times and totals side by side.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import time
from pathlib import Path

from results import SHARED, write_section

from hpa.pipeline.recipe import load_recipe, plan_recipe


def real_tables(d: Path) -> Path:
    """A dataset directory with the real label tables and no images (the plan reads only the tables)."""
    src = SHARED / "kaggle-hpa-2018"
    if not (src / "train.csv").is_file():
        raise SystemExit(f"{src}: the real label tables are missing (../shared/data, see its README)")
    d.mkdir(parents=True, exist_ok=True)
    for name, target in (("train.csv", "train.csv"), ("sample_submission.csv", "sample_submission.csv"),
                         ("HPAv18RBGY_wodpl.csv", "external.csv")):
        shutil.copyfile(src / name, d / target)
    for split in ("train", "test", "external"):
        (d / split).mkdir(exist_ok=True)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=["paper", "foundation"])
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    rows, totals, sections = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = real_tables(Path(tmp) / "hpa")
        for name in a.recipes:
            t0 = time.perf_counter()
            plan = plan_recipe(load_recipe(name), data, Path(tmp) / name, a.device).read_text()
            took = time.perf_counter() - t0
            total = re.search(r"\*\*Whole recipe on (.+?): (.+?)\.\*\*", plan)
            totals.append(f"| {name} | {total.group(1)} | {total.group(2)} | {took / 60:.0f} min |")
            for line in plan.splitlines():
                fold = re.match(r"^\| (\S+) \| (\d[\d.]* (?:s|min|h)) \|$", line)
                if fold:
                    rows.append(f"| {name} | {fold.group(1)} | fine-tuned, 5 folds | {fold.group(2)} per fold |")
                frozen = re.match(r"^\| (\S+) \| ([\d.]+) \| (\d+) \| ([^|]+) \| ([^|]+) \|$", line)
                if frozen:
                    rows.append(f"| {name} | {frozen.group(1)} | frozen: embed {frozen.group(4)}, "
                                f"classifiers {frozen.group(5)} | {frozen.group(2)} images/s embedding |")
            sections.append((name, plan))
    body = ["Each recipe's `--plan` on the same device, against the real 2018 label tables (31,072 train, "
            "74,606 HPAv18 external, 11,702 test); the plans' own tables follow.", "",
            "| recipe | device | projected wall time | the plan took |", "|---|---|---|---|", *totals, "",
            "| recipe | member | how it trains | cost |", "|---|---|---|---|", *rows]
    for name, plan in sections:
        body += ["", f"<details><summary>plan.md of {name}</summary>", "", plan.replace("# Plan", "### Plan"),
                 "</details>"]
    write_section("plan: the foundation recipe beside the paper recipe",
                  f"python bench/bench_plan.py --recipes {' '.join(a.recipes)} --device {a.device}", "\n".join(body))


if __name__ == "__main__":
    main()
