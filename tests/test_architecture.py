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
    code = ("import sys, hpa.prediction.inference, hpa.prediction.ensemble, hpa.prediction.folder\n"
            "print(sorted(m for m in sys.modules if m == 'albumentations' or m.startswith('hpa.training.')"
            " or m == 'hpa.data.dataset'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-800:]
    assert r.stdout.strip() == "[]"


# Each layer imports only the layers before it (and the shared errors and config, which import no
# layer above models); api.py and the command line (hpa/cli/) sit on top of all of them.
LAYERS = ["core", "data", "models", "prediction", "training", "pipeline"]
SHARED_TOP = {"errors", "config"}
TOP = {"api", "cli"}


def hpa_imports(path: Path) -> set[str]:
    """The hpa modules `path` imports, at its top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "hpa":
            out |= {node.module} if node.module != "hpa" else {f"hpa.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "hpa"}
    return out


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for p in SOURCES:
        parts = p.relative_to(PACKAGE).parts
        if len(parts) == 1 or parts[0] == "cli":
            for mod in hpa_imports(p):  # the top may import any layer, and the command line the API
                if mod.split(".")[1] == "cli" and parts[0] != "cli":
                    wrong.append(f"{'/'.join(parts)} imports {mod} (the library never imports the command line)")
            continue
        mine = LAYERS.index(parts[0])
        for mod in hpa_imports(p):
            first = mod.split(".")[1]
            if first in SHARED_TOP:
                if first == "config" and mine < LAYERS.index("prediction"):
                    wrong.append(f"{'/'.join(parts)} imports {mod} (config imports models)")
                continue
            if first in TOP or first not in LAYERS or LAYERS.index(first) > mine:
                wrong.append(f"{'/'.join(parts)} imports {mod}")
    assert wrong == []


def test_the_top_modules_are_the_api_config_and_errors_and_the_cli_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "api.py", "config.py", "errors.py"]
    assert sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()) == sorted([*LAYERS, "cli"])


def test_every_top_level_script_is_a_thin_launcher_of_its_cli_module():
    """Each script of hpa.cli.SCRIPTS exists, is at most 60 lines, and runs hpa.cli.<its module>.main;
    each command module's main is parse, hpa.api calls, print: no hpa import but the API, the CLI and
    the names it shows (layout, labels, choices)."""
    from hpa.cli import SCRIPTS

    for script, module in SCRIPTS.items():
        path = ROOT / script
        lines = path.read_text().splitlines()
        assert len(lines) <= 60, script
        if script.endswith(".sh"):
            assert f"python -m hpa.cli.{module}" in path.read_text() and "hpa.pipeline" not in path.read_text()
            continue
        assert f"from hpa.cli.{module} import main" in path.read_text(), script
        assert hpa_imports(path) <= {"hpa.cli", f"hpa.cli.{module}"}, script


def test_no_backend_switch_and_no_test_support_in_the_library():
    for p in SOURCES:
        text = p.read_text()
        assert "matplotlib.use(" not in text, p
        assert "shared/data" not in text and "../shared" not in text, p  # the real-data loader lives in tests/


# names that are not the toolkit's own layout: publishers' file names, and a glob of package data
FOREIGN = {("models/pretrained.py", "model.safetensors"), ("models/pretrained.py", "pytorch_model.bin"),
           ("data/download.py", "kaggle.json"),
           ("pipeline/recipe.py", "*.yaml")}
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
    """A file the toolkit writes or reads is named in hpa/data/layout.py only: a literal such as "best.pt"
    anywhere else in the package fails (messages that mention a file in a sentence are not names)."""
    stray = []
    for p in SOURCES:
        rel = p.relative_to(PACKAGE).as_posix()
        if rel in ("data/layout.py", "models/hpa_weights.py"):  # hpa_weights: the publishers' own file names
            continue
        stray += [f"{rel}:{line} {text!r}" for line, text in string_constants(p)
                  if FILE_NAME.match(text) and (rel, text) not in FOREIGN]
    assert stray == []
