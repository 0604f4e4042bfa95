"""The package's structure, checked from its source: one module for the errors, prediction apart from
the training stack, no backend switch or test support shipped in the library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import hpa
from conftest import ROOT

PACKAGE = Path(hpa.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))


def exception_classes(path: Path) -> list[str]:
    """Classes defined in `path` whose bases name an error or exception."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(b) for b in node.bases]
            if any(b.endswith(("Error", "Exception", "Stopped", "OutOfMemory")) for b in bases):
                out.append(node.name)
    return out


def test_every_error_class_is_in_hpa_errors():
    stray = {p.relative_to(PACKAGE).as_posix(): exception_classes(p) for p in SOURCES if p.name != "errors.py"}
    assert {k: v for k, v in stray.items() if v} == {}
    import hpa.errors as errors

    for name in exception_classes(PACKAGE / "errors.py"):
        assert issubclass(getattr(errors, name), errors.HPAError), name


def test_prediction_does_not_import_the_training_stack():
    code = ("import sys, hpa.inference, hpa.ensemble, hpa.folder\n"
            "print(sorted(m for m in ('albumentations', 'hpa.losses', 'hpa.dataset', 'hpa.training')"
            " if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-800:]
    assert r.stdout.strip() == "[]"


def test_no_backend_switch_and_no_test_support_in_the_library():
    for p in SOURCES:
        text = p.read_text()
        assert "matplotlib.use(" not in text, p
        assert "shared/data" not in text and "../shared" not in text, p  # the real-data loader lives in tests/
