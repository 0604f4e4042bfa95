"""Shared fixtures. Real HPA material is read from ../shared/data (CI has it; a user's clone
does not, so tests that need it skip with the reason)."""

from __future__ import annotations

import os

# Under pytest-xdist (run_tests.sh: one worker per core) each worker and the processes its tests start
# compute on one thread: two workers of two threads each on 2 cores oversubscribe them and the suite
# took as long as in one process; one thread each, 2 workers finished it in 0.8 of the time. Set before
# torch is imported, which reads it once.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from realdata import SHARED  # noqa: E402
from weights_server import server  # noqa: E402, F401  (the publishers' download server, a fixture)

ROOT = Path(__file__).resolve().parents[1]
# The one place offline mode is set: tests never reach the network, and every subprocess inherits it.
os.environ["HF_HUB_OFFLINE"] = "1"

# Files that take a minute or more, started first so that no worker is left alone with one at the end
# (run_tests.sh hands each worker whole files, in this order; the rest follow in collection order).
LONG_FILES = ("test_pipeline.py", "test_recipe_smoke.py", "test_slurm.py", "test_training.py", "test_ablate.py",
              "test_reliability.py", "test_plan_smoke.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: k for k, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: a file keeps its order


def shared_path(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent: real HPA data lives in ../shared/data, which only CI and the "
                    "project's machines have")
    return p


@pytest.fixture(scope="session")
def real_samples(tmp_path_factory) -> tuple[Path, list[tuple[str, str, str]]]:
    """(images dir, [(Id, Target, size)]) of the 8 real HPA samples. Without ../shared (a user's
    clone), synthetic stand-ins of the same sizes (512, 6 x 2048, 3072 px) drawn by the demo
    generator, so the format and size paths are still exercised."""
    import pandas as pd

    d = SHARED / "hpa-samples"
    if d.is_dir():
        df = pd.read_csv(d / "labels.csv", dtype=str)
        return d / "images", list(df.itertuples(index=False, name=None))
    import cv2
    import numpy as np

    from hpa.data.demo import render
    from hpa.data.images import write_sample_png

    out = tmp_path_factory.mktemp("synthetic_samples")
    rng = np.random.default_rng(0)
    rows = []
    for k, side in enumerate([512] + [2048] * 6 + [3072]):
        classes = sorted({int(c) for c in rng.choice(28, size=1 + k % 2, replace=False)})
        img = cv2.resize(render(classes, 256, rng), (side, side), interpolation=cv2.INTER_LINEAR)
        sid = f"synthetic{k:02d}-{side}"
        write_sample_png(out, sid, img)
        rows.append((sid, " ".join(map(str, classes)), f"{side}x{side}"))
    return out, rows


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A small demo dataset (64 px), generated once per test session. Every class is forced 6 times
    per split so that 2 folds of 200 samples can learn more than the common classes."""
    from hpa.data.demo import make_demo

    out = tmp_path_factory.mktemp("demo")
    make_demo(out, n_train=400, n_test=200, size=64, seed=1, min_per_class=6)
    return out


def private_copy(data: Path, to: Path) -> Path:
    """A copy of a session dataset's tables and images (not its prepared store, folds or dedup outputs)
    for a test that prepares or folds it: no test changes what another one reads."""
    import shutil

    return Path(shutil.copytree(data, to, ignore=shutil.ignore_patterns("prepared", "folds*", "dedup", "embeddings")))


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """48 train / 28 test demo samples at 32 px, prepared, in 2 folds: enough to train in seconds."""
    import hpa
    from hpa.data.demo import make_demo

    data = tmp_path_factory.mktemp("small") / "data"
    make_demo(data, n_train=48, n_test=28, size=32, seed=3, min_per_class=1)
    assert hpa.prepare(data, size=32, echo=lambda _: None) == {}
    hpa.make_folds(data, n_folds=2, echo=lambda _: None)
    return data


TINY_RUN_SETTINGS = dict(epochs=2, batch_size=16, crop=24, crop_large=None, workers=0, amp="off", optimizer="adamw",
                         lr=3e-3, loss="bce", hard_k=None, pretrained="none", cycle_epochs=None, cycles=1)


@pytest.fixture(scope="session")
def tiny_runs(small_data, tmp_path_factory) -> Path:
    """tiny_cnn trained on both folds of `small_data` (2 epochs, fp32), in-process, once per session:
    a runs root that tests read and never write to."""
    import hpa

    runs = tmp_path_factory.mktemp("tiny_runs") / "runs"
    for f in (0, 1):
        hpa.train_fold("tiny_cnn", fold=f, size=32, data_dir=small_data, runs=runs, echo=lambda _: None,
                       **TINY_RUN_SETTINGS)
    return runs


def assert_one_line_error(r, *fragments: str) -> str:
    """A finished process `r` failed as bad input must: exit code 1, no traceback, exactly one
    `error: ...` line on stderr, holding every fragment. Returns that line."""
    assert r.returncode == 1, (r.returncode, r.stdout[-1500:], r.stderr[-1500:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, r.stderr[-2000:]
    for f in fragments:
        assert f in errors[0], (f, errors[0])
    return errors[0]


def fake_slurm(tmp_path: Path, monkeypatch, sinfo: str, squeue: str) -> Path:
    """sinfo, squeue and sbatch as scripts on PATH printing what a one-node cluster would (sbatch
    records its calls): the SLURM client side of hpa.pipeline.slurm without a cluster."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sinfo").write_text(f"#!/bin/sh\ncat <<'OUT'\n{sinfo}\nOUT\n")
    # squeue's -o: id|name|state, with |reason when %r is asked for
    (bin_dir / "squeue").write_text(f"#!/bin/sh\ncase \"$*\" in *%r*) cut='1-4' ;; *) cut='1-3' ;; esac\n"
                                    f"[ -n '{squeue}' ] && printf '%s\\n' '{squeue}' | cut -d'|' -f$cut\nexit 0\n")
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'sbatch.calls'}\necho 41\n")
    for p in bin_dir.iterdir():
        p.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "sbatch.calls"


def cell_by_hand(img, labels, k: int, square: bool = False):
    """Cell `k` alone, made here without the toolkit: its bounding box of `img` with 0 outside the
    cell; with `square`, centred on black to a square (what a cell crop is)."""
    import numpy as np

    ys, xs = np.nonzero(labels == k)
    box = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1].copy()
    box[labels[ys.min():ys.max() + 1, xs.min():xs.max() + 1] != k] = 0
    if not square:
        return box
    side = max(box.shape[:2])
    out = np.zeros((side, side) + box.shape[2:], box.dtype)
    top, left = (side - box.shape[0]) // 2, (side - box.shape[1]) // 2
    out[top:top + box.shape[0], left:left + box.shape[1]] = box
    return out
