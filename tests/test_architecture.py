"""The package's structure, checked from its source: one module for the errors, prediction apart from
the training stack, no backend switch or test support shipped in the library."""

from __future__ import annotations

import ast
import re
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


# names that are not the toolkit's own layout: publishers' file names, and a glob of package data
FOREIGN = {("models/pretrained.py", "model.safetensors"), ("models/pretrained.py", "pytorch_model.bin"),
           ("recipe.py", "*.yaml")}
FILE_NAME = re.compile(r"^[\w.*-]+\.(pt|pth|bin|csv|yaml|json|png|md|html|safetensors|npy|zip|txt|lock)$")


def string_constants(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant that is not a docstring."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_every_file_name_is_in_hpa_layout():
    """A file the toolkit writes or reads is named in hpa/layout.py only: a literal such as "best.pt"
    anywhere else in the package fails (messages that mention a file in a sentence are not names)."""
    stray = []
    for p in SOURCES:
        rel = p.relative_to(PACKAGE).as_posix()
        if rel in ("layout.py", "models/hpa_weights.py"):  # hpa_weights: the publishers' own file names
            continue
        stray += [f"{rel}:{line} {text!r}" for line, text in string_constants(p)
                  if FILE_NAME.match(text) and (rel, text) not in FOREIGN]
    assert stray == []
