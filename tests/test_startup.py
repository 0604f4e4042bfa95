"""No script contacts the network at start-up (an offline cluster node pays no timeout)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(echo=lambda _: None)
FAST = {"epochs": 1, "batch_size": 16, "crop": 24, "crop_large": None, "workers": 0, "pretrained": "none",
        "cycle_epochs": None, "cycles": 1, "loss": "bce", "hard_k": None, "amp": "off"}



SITE = textwrap.dedent('''
    import os, socket, sys
    LOG = os.environ["NET_LOG"]
    def hook(event, args):
        if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto"):
            if event == "socket.connect" and getattr(args[0], "family", None) == socket.AF_UNIX:
                return
            with open(LOG, "a") as f:
                f.write(f"{sys.argv[:2]} {event} {args[1:]!r}\\n")
            raise OSError("network access blocked by the test")
    sys.addaudithook(hook)
''')


@pytest.mark.slow
def test_no_script_contacts_the_network_at_start_up(tmp_path, small_data):
    """Every script and module with an audit hook that records, and refuses, any network connection or
    name lookup: albumentations' release check (on every import) used to be one."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    log = tmp_path / "net.log"
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "NET_LOG": str(log)}
    env.pop("NO_ALBUMENTATIONS_UPDATE", None)  # the toolkit must set it itself
    scripts = ["train_fold.py", "predict_tta.py", "find_thresholds.py", "blend.py", "ablate.py", "export_bundle.py",
               "embed.py", "input_prep/download.py", "input_prep/prepare.py", "input_prep/dedup.py",
               "input_prep/make_folds.py", "input_prep/make_demo.py"]
    # one interpreter for every module and every script's --help (each run as __main__), so the check costs
    # one start-up of torch; the training run below is the real start-up of a script that trains
    every = (f"import pkgutil, importlib, runpy, sys, hpa, input_prep\n"
             f"for m in pkgutil.walk_packages(hpa.__path__, 'hpa.'):\n"
             f"    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
             f"import albumentations\n"
             f"for s in {scripts!r}:\n"
             f"    sys.argv = [s, '--help']\n"
             f"    try: runpy.run_path(s, run_name='__main__')\n"
             f"    except SystemExit as e: assert e.code in (0, None), (s, e.code)\n")
    commands = [["-c", every], ["train_fold.py", "--arch", "tiny_cnn", "--fold", "0", "--size", "32", "--data-dir",
                                str(small_data), "--runs", str(tmp_path / "runs"), "--epochs", "1", "--batch-size",
                                "16", "--crop", "24", "--workers", "0", "--amp", "off", "--limit-batches", "1"]]
    for cmd in commands:
        r = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
        assert r.returncode == 0, (cmd[:2], r.stderr[-1500:])
    assert not log.exists(), log.read_text()
    # the hook does catch a connection attempt (so its silence above means something)
    r = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9), 1)"],
                       env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "socket." in log.read_text()
