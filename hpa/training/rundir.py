"""What an existing run directory allows: resume it, start it fresh, or refuse with one line."""

from __future__ import annotations

import json
from pathlib import Path

from hpa.config import TrainConfig, changed_settings, read_yaml
from hpa.core.checkpoint import load_checkpoint
from hpa.data import layout
from hpa.data.provenance import same_data
from hpa.errors import RunError
from hpa.training.loaders import TrainData

REPLACE_HINT = "--overwrite replaces it, or choose another --runs directory"


def guard_run_dir(run_dir: Path, cfg: TrainConfig, resume: bool, overwrite: bool,
                  hint: str = REPLACE_HINT) -> dict | None:
    """What to do with an existing run directory. Returns the checkpoint to resume from, or None
    to start fresh. A directory without last.pt holds nothing trained (a start interrupted before
    its first checkpoint, by Ctrl-C, kill -9, an OOM kill, a preemption or a full disk): it starts
    fresh, after its saved settings are checked when resuming. A trained run is never replaced
    silently, and a resume with settings that change what is learned is refused."""
    last = layout.run_file(run_dir, "last")
    if overwrite:
        return None
    if not last.is_file():
        saved = layout.run_file(run_dir, "config")
        changes = changed_settings(read_yaml(saved), cfg) if resume and saved.is_file() else []
        if changes:
            raise RunError(f"{run_dir}: was started with other settings ({'; '.join(changes)}) and holds no "
                           f"checkpoint; {hint}")
        return None
    ck = load_checkpoint(last, f"delete it to train this fold from the start ({hint})")
    if not resume:
        done = ck["epoch"] >= ck["config"]["epochs"]
        state = "a finished run" if done else f"a partly trained run (epoch {ck['epoch']} of {ck['config']['epochs']})"
        raise RunError(f"{run_dir}: holds {state}; --resume continues it, {hint}")
    changes = changed_settings(ck["config"], cfg)
    if changes:
        raise RunError(f"{run_dir}: --resume with changed settings ({'; '.join(changes)}); {hint}")
    return ck


def check_same_data(run_dir: Path, ck: dict | None, data: TrainData, hint: str = REPLACE_HINT) -> None:
    """A resumed run (or a restarted one that had not checkpointed yet) must see the data it started
    with; compared by content, so a dataset that moved still resumes."""
    saved = (ck or {}).get("provenance")
    if saved is None and ck is None and layout.run_file(run_dir, "provenance").is_file():
        saved = json.loads(layout.run_file(run_dir, "provenance").read_text())
    if saved is not None and not same_data(saved, data.provenance):
        raise RunError(f"{run_dir}: --resume on other data than the run started with (labels, folds or the Ids of "
                       f"the fold changed); {hint}")
