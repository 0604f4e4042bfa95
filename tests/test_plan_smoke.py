"""The recipe's `--plan --smoke` (what `run_all.sh --plan` runs) on the real-layout dataset: the paper
recipe timed and projected, nothing trained."""

import pytest
import yaml
from real_layout import build_dataset
from scripts import run_script

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_plan_times_every_member_and_projects_the_recipe(real_samples, tmp_path):
    """`--plan --smoke`: every member of the paper recipe timed at both stored sides on this CPU, and
    the whole recipe projected; nothing is trained. In this process: run_all.sh passes the flags to
    the module (its own subprocess smoke is test_recipe_smoke.py)."""
    d = tmp_path / "data"
    build_dataset(real_samples, d)
    r = run_script("-m", "hpa.cli.run_all", "--data-dir", d, "--recipe", "paper", "--smoke", "--plan",
                   "--out-dir", tmp_path / "work", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    plan = (tmp_path / "work" / "plan.md").read_text()
    recipe = yaml.safe_load((ROOT / "configs" / "recipes" / "paper.yaml").read_text())
    for m in recipe["members"]:
        small = round(m["size"] / 12)
        rows = [ln for ln in plan.splitlines() if ln.startswith(f"| {m['arch']}_{small} | ")]
        assert len(rows) == 3, m  # two stored sides, one fold projection
        assert float(rows[0].split("|")[-2]) > 0  # images/s
    assert "**Whole recipe on one CPU:" in plan and plan in r.stdout
    assert not (tmp_path / "work" / "runs").exists()
