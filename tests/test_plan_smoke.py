"""`run_all.sh --plan --smoke` on the real-layout dataset: the paper recipe timed and projected,
nothing trained."""

import subprocess

import pytest
import yaml
from real_layout import build_dataset

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_plan_times_every_member_and_projects_the_recipe(real_samples, tmp_path):
    """`run_all.sh --plan --smoke`: every member of the paper recipe timed at both stored sides on
    this CPU, and the whole recipe projected; nothing is trained."""
    d = tmp_path / "data"
    build_dataset(real_samples, d)
    r = subprocess.run(["bash", "run_all.sh", "--data-dir", str(d), "--recipe", "paper", "--smoke", "--plan",
                        "--out-dir", str(tmp_path / "work"), "--device", "cpu"], cwd=ROOT, capture_output=True,
                       text=True)
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
