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


# ---- every file and folder name of the toolkit's outputs is in hpa/data/layout.py --------------

# What a name of the toolkit's own is: a constant with no blank that ends in the extension of a file
# it writes or reads (".csv", "oof_tta{}.csv", the ".safetensors" of f"weights/{m}/f{k}.safetensors"),
# or that holds a folder it makes as a path component ("weights/", "predictions/*_oof.csv"), or that
# is such a folder alone where a path is made of it (`out / "runs"`, `Path("runs")`, a default value,
# an assignment). The temporary names of an atomic write (.tmp, .old, .link, .part) are no output.
EXTENSIONS = "pt|pth|bin|csv|json|yaml|yml|png|md|html|safetensors|npy|npz|zip|txt|lock|log|sbatch|gz|jpg|tif|tiff"
FILE_NAME = re.compile(rf"^\S*\.({EXTENSIONS})$")
OUTPUT_DIRS = {"runs", "predictions", "prepared", "embeddings", "dedup", "weights", "report_files", "test_images",
               "folds", "slurm", "ablations"}
PATH_CALLS = {"Path", "PurePath", "joinpath", "with_name", "open"}
NOT_SCANNED = {"data/layout.py": "the layout itself",
               "models/hpa_weights.py": "the publishers' source table of the named HPA weights (their file names)"}
# names that are not the toolkit's: (module, name) -> why the name stands where it does
FOREIGN = {
    ("models/pretrained.py", "model.safetensors"): "the Hugging Face Hub's file names of a timm model",
    ("models/pretrained.py", "pytorch_model.bin"): "the Hugging Face Hub's file names of a timm model",
    ("models/weight_layouts.py", ".safetensors"): "the format of a weights file the user names (--pretrained FILE)",
    ("data/download.py", "kaggle.json"): "Kaggle's API token, where the kaggle package looks for it",
    ("data/download.py", ".zip"): "Kaggle's archive of the competition, named by Kaggle",
    ("data/download.py", ".jpg"): "the HPA image server's file names (the download's addresses)",
    ("data/demo.py", ".png"): "the image format cv2.imencode encodes to, not a file name",
    ("data/images.py", ".png"): "the image format cv2.imencode encodes to, not a file name",
    ("prediction/folder.py", ".png"): "the image format cv2.imencode encodes a class map to, not a file name",
    ("config.py", ".yaml"): "package data the toolkit reads: configs/<arch>.yaml",
    ("pipeline/recipe.py", ".yaml"): "package data the toolkit reads (configs/recipes/<name>.yaml), a user's recipe",
    ("pipeline/recipe.py", ".yml"): "a user's recipe file, read",
    ("pipeline/recipe.py", "*.yaml"): "the recipes among the package data, listed in an error message",
}


def _is_path_context(node: ast.Constant, parent: dict[int, ast.AST]) -> bool:
    """Whether a path is made of `node`: an operand of `/`, an argument of Path(), with_name(), ...,
    a parameter's or a flag's default, or the value of an assignment."""
    up = parent.get(id(node))
    if isinstance(up, ast.BinOp) and isinstance(up.op, ast.Div):
        return True
    if isinstance(up, ast.Call) and node in up.args:
        f = up.func
        return (f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None) in PATH_CALLS
    if isinstance(up, ast.keyword):
        return up.arg == "default"
    if isinstance(up, ast.arguments):
        return node in up.defaults or node in up.kw_defaults
    return isinstance(up, ast.Assign | ast.AnnAssign) and up.value is node


def output_names(source: str) -> list[tuple[int, str]]:
    """(line, text) of every name of the toolkit's own in `source`: string constants and the constant
    parts of f-strings, docstrings left out (see FILE_NAME and OUTPUT_DIRS)."""
    tree = ast.parse(source)
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    parent = {id(c): n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
    out = []
    for n in ast.walk(tree):  # an f-string's constant parts are Constant nodes of its JoinedStr
        if not isinstance(n, ast.Constant) or not isinstance(n.value, str) or id(n) in docs:
            continue
        text = n.value
        if not text or any(c.isspace() for c in text):
            continue  # a sentence that mentions a file is not a name
        parts = [c for c in text.split("/") if c]
        if FILE_NAME.match(text) or ("/" in text and any(c in OUTPUT_DIRS for c in parts)) \
                or (text in OUTPUT_DIRS and _is_path_context(n, parent)):
            out.append((n.lineno, text))
    return out


def test_every_file_name_is_in_hpa_layout():
    """A file or folder the toolkit writes or reads is named in hpa/data/layout.py only: a name such
    as "best.pt", f"{name}.log" or `out / "runs"` anywhere else in the package fails, but for the
    foreign names of FOREIGN."""
    stray, used = [], set()
    for p in SOURCES:
        rel = p.relative_to(PACKAGE).as_posix()
        if rel in NOT_SCANNED:
            continue
        for line, text in output_names(p.read_text()):
            if (rel, text) in FOREIGN:
                used.add((rel, text))
            else:
                stray.append(f"{rel}:{line} {text!r}")
    assert stray == []
    assert set(FOREIGN) - used == set()  # an allowance no longer needed goes


def test_the_name_check_sees_names_in_every_form():
    """output_names finds a planted name in each form it takes, and passes the forms that are not names."""
    caught = """
import pathlib
LOG = "train.log"
def f(out, k, runs="runs", member="m"):
    a = out / f"oof_tta{k}.csv"
    b = out / "predictions"
    c = f"weights/{member}/f{k}.safetensors"
    d = pathlib.Path("embeddings")
    e = out.with_name("report_files")
"""
    assert sorted(output_names(caught)) == [(3, "train.log"), (4, "runs"), (5, ".csv"), (6, "predictions"),
                                            (7, ".safetensors"), (7, "weights/"), (8, "embeddings"),
                                            (9, "report_files")]
    passed = """
def g(d, launcher):
    "A docstring names best.pt."
    x = d["weights"] if launcher == "slurm" else d.get("runs")
    raise ValueError(f"{x}: see log.csv in the run")
"""
    assert output_names(passed) == []


def public_functions(path: Path):
    """(name, line, parameter count) of the module's public functions and public methods of its classes
    (nested functions are a function's own business; `self`/`cls` do not count)."""
    tree = ast.parse(path.read_text())
    bodies = [(None, tree.body)] + [(n.name, n.body) for n in tree.body if isinstance(n, ast.ClassDef)]
    for owner, body in bodies:
        for n in body:
            if isinstance(n, ast.FunctionDef) and not n.name.startswith("_") and not (owner or "").startswith("_"):
                a = n.args
                names = [x.arg for x in a.posonlyargs + a.args] + [x.arg for x in a.kwonlyargs]
                yield f"{owner + '.' if owner else ''}{n.name}", n.lineno, len([x for x in names
                                                                               if x not in ("self", "cls")])


def test_no_public_function_takes_more_than_eight_parameters():
    """Past eight, a seam takes an options object (PredictOptions, BlendSettings, RecipeRequest, Runs, ...)."""
    wide = [f"{p.relative_to(PACKAGE).as_posix()}:{line} {name} ({k})" for p in SOURCES
            for name, line, k in public_functions(p) if k > 8]
    assert wide == []
