"""Every command in README.md and the manual runs as written (principle 6). The commands are read out
of the Markdown itself (fenced bash blocks, continued lines joined, and `python ...` / `bash
run_all.sh ...` code spans) and out of each script's docstring (the manual's flags reference prints
it): every flag must exist in that script's parser and every value parse (hpa.cli.build_parser),
`[...]` optional parts tried with and without. Beyond parsing, each is checked as far as it runs
cheaply here: a train_fold.py command builds its whole config (--print-config: the crop against the
named weights' side), an embed.py command its encoder, a recipe named by run_all.sh loads, and the
README's own-images command predicts a folder with a bundle. Commands that need real data, weights or a
GPU stop there (the recipe's --plan and --smoke run in test_plan_smoke.py and test_recipe_smoke.py).
A config whose `pretrained` names HPA weights is checked against their native side and channels."""

from __future__ import annotations

import contextlib
import io
import re
import shlex

import pytest
from scripts import run_script

from conftest import ROOT
from hpa.cli import SCRIPTS, build_parser

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(?:bash|sh|shell|console)\n(.*?)^```", re.M | re.S)
SPAN = re.compile(r"`((?:python|bash) [^`]+)`")
# commands of other tools the manual shows; anything else must be one of the toolkit's scripts
OTHER_TOOLS = {"xdg-open", "tensorboard"}
OTHER_PYTHON = ("-c", "-m mkdocs", "bench/")  # python -c ..., python -m mkdocs ..., the benchmarks
MODULES = {module: script for script, module in SCRIPTS.items()}


def markdown_commands() -> list[tuple[str, str]]:
    """(where, command) for every command line of the Markdown files."""
    out = []
    for md in DOCS:
        text = md.read_text()
        where = str(md.relative_to(ROOT))
        for block in FENCE.findall(text):
            for line in block.replace("\\\n", " ").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    out.append((where, line.strip()))
        prose = FENCE.sub("", text)
        out += [(where, m) for m in SPAN.findall(prose)]
    return out


def docstring_commands() -> list[tuple[str, str]]:
    """The usage examples of each script's docstring (shown by --help and in the flags reference)."""
    import importlib

    out = []
    for module in SCRIPTS.values():
        doc = (importlib.import_module(f"hpa.cli.{module}").__doc__ or "").replace("\\\n", " ")
        out += [(f"hpa/cli/{module}.py", ln.strip()) for ln in doc.splitlines()
                if re.match(r"^\s{4}(python|bash) ", ln)]
    return out


def variants(command: str) -> list[str]:
    """The command with its `[...]` optional parts left out, and with them in."""
    if "[" not in command or re.search(r"\[[^\]]*\]\(", command):
        return [command]
    return [re.sub(r"\s*\[[^\]]*\]", "", command), re.sub(r"\[([^\]]*)\]", r"\1", command)]


def script_and_args(command: str) -> tuple[str | None, list[str]]:
    """(the toolkit script a command runs, its arguments), or (None, []) for another tool's command;
    a command that is neither fails the test."""
    words = shlex.split(command, comments=True)
    while words and re.match(r"^[A-Z_]+=", words[0]):  # DATA_DIR=... bash run_all.sh
        words.pop(0)
    if not words:
        return None, []
    tool = words[0]
    if tool in OTHER_TOOLS:
        return None, []
    if tool == "source":  # the environment script the set-up steps source
        assert words[1:] == ["setup_env.sh"] and (ROOT / "setup_env.sh").is_file(), command
        return None, []
    if tool == "bash":
        if words[1].startswith("bench/"):  # a benchmark's set-up script
            assert (ROOT / words[1]).is_file(), command
            return None, []
        if words[1] == "run_tests.sh":  # pytest's arguments
            assert (ROOT / "run_tests.sh").is_file()
            return None, []
        return words[1], words[2:]
    if tool == "torchrun":
        k = words.index("-m")
        return MODULES[words[k + 1].removeprefix("hpa.cli.")], words[k + 2:]
    assert tool == "python", f"{command!r}: not a command of the toolkit nor of a tool the manual names"
    rest = " ".join(words[1:])
    if rest.startswith(OTHER_PYTHON):
        bench = re.match(r"^(bench/\S+\.py)", rest)
        assert not bench or (ROOT / bench[1]).is_file(), command
        return None, []
    if words[1] == "-m":
        return MODULES[words[2].removeprefix("hpa.cli.")], words[3:]
    return words[1], words[2:]


COMMANDS = sorted({(where, shlex.join(shlex.split(v, comments=True)))
                   for where, c in markdown_commands() + docstring_commands() for v in variants(c)
                   if "<" not in c})  # `python -m hpa.cli.<name>` names a pattern, not a command


def test_the_commands_are_found():
    # guards the reading above against a pattern that finds nothing
    found = {c for _, c in COMMANDS}
    assert "python predict_tta.py --bundle hpa-bundle --images my_images/ --out my_images.csv" in found
    assert "bash run_all.sh --data-dir data/hpa --launcher slurm --partition gpu --gpus-per-job 1 --cpus-per-job 8 " \
           "--time 2-00:00:00 --account A --mem 64G --sbatch=--qos=long --wait" in found  # a block's 2 lines, [...]
    assert any(c.startswith("python input_prep/prepare.py") and "--shard 3/50" in c for c in found)
    assert len({script_and_args(c)[0] for c in found} - {None}) >= 10


def check_as_written(script: str, args: list[str]) -> None:
    """Parse `args` with the script's parser, then run what a command can run cheaply here."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            a = build_parser(script).parse_args(args)
        except SystemExit as e:
            if e.code == 0 and "--help" in args:  # `bash run_all.sh --help`: printed, nothing to run
                return
            pytest.fail(f"{script} {' '.join(args)}: {err.getvalue().strip()}")
    if script == "predict_tta.py":
        from hpa.cli.predict_tta import check_flags

        check_flags(a)
    elif script == "train_fold.py":  # the whole config, as training would build it (named weights included)
        from hpa.cli.train_fold import parse

        parse(args)
    elif script == "embed.py":
        from hpa.prediction.embeddings import Encoder

        Encoder.named(a.pretrained, arch=a.arch, size=a.size, tta=a.tta)
    elif script == "run_all.sh" and a.recipe and not a.recipe.endswith((".yaml", ".yml")):
        from hpa.pipeline.recipe import load_recipe

        load_recipe(a.recipe)  # a recipe of the toolkit by name; a YAML path is the user's own


@pytest.mark.parametrize("where, command", COMMANDS, ids=[c[:90] for _, c in COMMANDS])
def test_every_documented_command_parses_and_checks(where, command):
    script, args = script_and_args(command)
    if script is None:
        return
    assert script in SCRIPTS, f"{where}: {command!r} runs {script}, which is not a script ({', '.join(SCRIPTS)})"
    assert (ROOT / script).is_file(), f"{where}: {script} does not exist"
    check_as_written(script, args)


def test_the_readmes_own_images_commands_run_as_written(tmp_path):
    """`python predict_tta.py --bundle hpa-bundle --images my_images/ --out my_images.csv`, then the
    report opened beside it: in a folder holding a bundle and two images, exactly as written."""
    import numpy as np

    from hpa.config import load_arch_config
    from hpa.data.images import write_sample_png
    from hpa.models import build_model
    from hpa.prediction.bundle import write_bundle
    from hpa.prediction.ensemble import Ensemble, Member

    cfg = load_arch_config("tiny_cnn", size=64, fold=0, pretrained="none")
    ens = Ensemble([Member("tiny_cnn_64", 64, [build_model("tiny_cnn", **cfg.model).eval()], ("id",), [64], "off",
                           [0], [cfg], [{}])], "equal", np.ones(1), np.full(28, 0.5))
    write_bundle(ens, tmp_path / "hpa-bundle", training_data={"labels": {}, "folds_sha256": ""},
                 summary={"oof_macro_f1": 0.1, "oof_macro_f1_at_0.5": 0.1, "oof_rows": 4})
    rng = np.random.default_rng(0)
    for sid in ("a", "b"):
        write_sample_png(tmp_path / "my_images", sid, rng.integers(0, 255, (64, 64, 4), dtype=np.uint8))
    readme = (ROOT / "README.md").read_text()
    # the lab's bundle line (the published model's needs its download, which the published-model tests serve)
    lines = [ln for ln in FENCE.findall(readme)[-1].splitlines() if "--bundle hpa-bundle" in ln or "xdg-open" in ln]
    predict, show = (shlex.split(ln, comments=True) for ln in lines)
    assert predict[:2] == ["python", "predict_tta.py"] and show[0] == "xdg-open"
    r = run_script(predict[1], *predict[2:], "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    import pandas as pd

    assert pd.read_csv(tmp_path / "my_images.csv")["Id"].tolist() == ["a", "b"]
    assert (tmp_path / show[1]).is_file()  # report.html, beside my_images.csv


def named_weight_configs() -> list[tuple[str, str, int, dict]]:
    """(where, arch, size, settings) of every config that names HPA weights: the arch configs, and each
    member of each recipe (its own size and settings)."""
    import yaml

    from hpa.config import CONFIG_DIR
    from hpa.models import hpa_weights

    out = []
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        c = yaml.safe_load(path.read_text())
        if hpa_weights.is_named(str(c.get("pretrained"))):
            out.append((path.name, path.stem, c.get("size"), {}))
    for path in sorted((CONFIG_DIR / "recipes").glob("*.yaml")):
        for m in yaml.safe_load(path.read_text()).get("members", []):
            if hpa_weights.is_named(str((m.get("set") or {}).get("pretrained"))):
                settings = {k: v for k, v in m["set"].items() if k not in ("epochs", "C", "head_hidden",
                                                                           "head_dropout", "lr", "batch_size")}
                out.append((f"recipes/{path.name}", m["arch"], m["size"], settings))
    return out


def test_configs_naming_hpa_weights_fit_their_native_side_and_channels():
    from hpa.config import load_arch_config
    from hpa.models import hpa_weights

    found = named_weight_configs()
    assert found, "no config names HPA weights: the check below checks nothing"
    for where, arch, size, settings in found:
        w = hpa_weights.source(settings.get("pretrained"))
        cfg = load_arch_config(arch, size=size, **{**settings, "accept_licence": True})
        assert cfg.model["channels"] == w.channels and cfg.model["img_size"] == w.img_size, where
        # the training crop (or the whole image) is the weights' own side where the data allow it, and a
        # whole number of 16 px patches
        side = cfg.crop or cfg.size
        assert side == min(w.img_size, cfg.size) and side % 16 == 0, (where, side, w.img_size)
        assert cfg.size >= w.img_size, f"{where}: size {cfg.size} below the {w.name} weights' side {w.img_size}"


def test_python_blocks_call_the_api_with_its_own_arguments():
    """The manual's Python: every call of `hpa.NAME(...)`, and of a method of what `hpa.load_bundle`
    returns, binds to that function's signature (own-images.md passed `device=` to predict_folder,
    which takes `opts=`)."""
    import ast
    import inspect

    import hpa
    from hpa.prediction.bundle import Bundle

    returns = {"load_bundle": Bundle}
    bad, calls = [], 0
    for md in DOCS:
        for block in re.findall(r"^```python\n(.*?)^```", md.read_text(), re.M | re.S):
            tree = ast.parse(block)
            kinds = {t.id: returns[n.value.func.attr] for n in tree.body if isinstance(n, ast.Assign)
                     and isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Attribute)
                     and n.value.func.attr in returns for t in n.targets if isinstance(t, ast.Name)}
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and isinstance(node.func.value, ast.Name)):
                    continue
                owner, name = node.func.value.id, node.func.attr
                fn = getattr(hpa, name) if owner == "hpa" else getattr(kinds[owner], name) if owner in kinds else None
                if fn is None:
                    continue
                calls += 1
                params = inspect.signature(fn).parameters
                args = [None] * len(node.args) if "self" not in params else [None] * (len(node.args) + 1)
                try:
                    inspect.signature(fn).bind(*args, **{k.arg: None for k in node.keywords if k.arg})
                except TypeError as e:
                    bad.append(f"{md.relative_to(ROOT)}: {ast.unparse(node)}: {e}")
    assert calls >= 5 and bad == []
