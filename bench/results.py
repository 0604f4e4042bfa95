"""Writing benchmark figures into bench/RESULTS.md, one marked section per benchmark."""

from __future__ import annotations

import os
import platform
import re
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def _realdata():
    """tests/realdata.py, the loader of the real material in ../shared/data that the tests use too
    (it is test support, not part of the package), imported from its path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("realdata", Path(__file__).resolve().parents[1] / "tests" /
                                                  "realdata.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


realdata = _realdata()
SHARED, load_real = realdata.SHARED, realdata.load_real


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {date.today().isoformat()}")


def write_section(name: str, command: str, body: str) -> None:
    header = "# Benchmark results\n\nEach section is rewritten by the script named in it.\n"
    text = RESULTS.read_text() if RESULTS.is_file() else header
    block = (f"<!-- {name} -->\n## {name}\n\nCommand: `{command}`  \nMachine: {machine()}\n\n{body.strip()}\n"
             f"<!-- /{name} -->")
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    from hpa.core.atomic import atomic_write_text

    atomic_write_text(RESULTS, text)
    print(block)
