"""Every script against a catalogue of bad versions of each file or value it takes: one `error:` line,
exit code 1, no traceback, and every input file unchanged (hashed before and after). A new script
joins by one line of SCRIPT_INPUTS; a new kind of bad file by one entry of BAD_TABLES. The scripts
run in this process (hpa.cli.run around each command's main, as the top-level scripts do); their
subprocess wrappers are tested elsewhere. Free-text parsers get property-based tests (Hypothesis)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpa.cli import run
from hpa.data.labels import NUM_CLASSES
from hpa.data.predictions import COLUMNS
from hpa.errors import HPAError

LABELS = "Id,Target\na,0 1\nb,2\nc,27\nd,5 6\n"
OOF = ",".join(COLUMNS) + "\n" + "".join(f"{i}," + ",".join(["0.5"] * NUM_CLASSES) + "\n" for i in "abcd")

# What a careless user hands a script instead of a table: name -> how it is written at `path`.
BAD_TABLES: dict[str, Callable[[Path, str], None]] = {
    "missing": lambda p, good: None,
    "empty file": lambda p, good: p.write_bytes(b""),
    "header only": lambda p, good: p.write_text(good.splitlines()[0] + "\n"),
    "duplicate Id": lambda p, good: p.write_text(good + good.splitlines()[1] + "\n"),
    "wrong columns": lambda p, good: p.write_text("Name,Value\nx,1\n"),
    "binary garbage": lambda p, good: p.write_bytes(bytes(range(256)) * 4),
    "a folder": lambda p, good: p.mkdir(),
    "unsafe Id": lambda p, good: p.write_text(good.splitlines()[0] + "\n" + "../../etc/passwd"
                                               + good.splitlines()[1][1:] + "\n"),
}


# what the line says, where one wording covers every reader of tables
SAYS = {"header only": "has a header and no rows", "a folder": "a folder, not a", "unsafe Id": "passwd"}


def run_script(main: Callable, argv: list[str]) -> tuple[int, str]:
    """Exit code and stderr of one command in this process."""
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            run(main, [str(a) for a in argv])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except HPAError as e:  # run() turns these into one line; reaching here would be a bug
            pytest.fail(f"escaped the wrapper: {e}")
    return code, err.getvalue()


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_refused(main: Callable, argv: list, inputs: Path, case: str, says: str = "") -> str:
    before = digests(inputs)
    try:
        code, err = run_script(main, argv)
    except Exception as e:  # a traceback: the class of fault this file exists for
        pytest.fail(f"{case}: {type(e).__name__}: {e}")
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, (case, code, err[-1500:])
    assert says in lines[0], (case, lines[0])
    assert digests(inputs) == before, case  # nothing of the user's changed
    return lines[0]


def _make_folds(d: Path, table: Path) -> list:
    return ["--labels", table, "--n-folds", "2", "--out", d / "out" / "folds.csv"]


def _thresholds_oof(d: Path, table: Path) -> list:
    (d / "lab.csv").write_text(LABELS)
    return ["--oof", table, "--labels", d / "lab.csv", "--allow-missing-oof", "--out", d / "out" / "t.json"]


def _thresholds_labels(d: Path, table: Path) -> list:
    (d / "m_64_f0_oof.csv").write_text(OOF)
    return ["--oof", d / "m_64_f0_oof.csv", "--labels", table, "--allow-missing-oof", "--out", d / "out" / "t.json"]


def _blend(role: str) -> Callable[[Path, Path], list]:
    def argv(d: Path, table: Path) -> list:
        files = {"oof": d / "m_64_f0_oof.csv", "test": d / "m_64_f0_test.csv", "labels": d / "lab.csv",
                 "sub": d / "sub.csv"}
        goods = {"oof": OOF, "test": OOF, "labels": LABELS, "sub": "Id,Predicted\na,\nb,\nc,\nd,\n"}
        for k, p in files.items():
            if k != role:
                p.write_text(goods[k])
        files[role] = table
        return ["--oof", files["oof"], "--test", files["test"], "--labels", files["labels"], "--sample-submission",
                files["sub"], "--weights", "equal", "--method", "flat", "--allow-missing-oof", "--out",
                d / "out" / "submission.csv"]
    return argv


def _prepare(d: Path, table: Path) -> list:
    (d / "train").mkdir(exist_ok=True)
    return ["--data-dir", d, "--size", "32", "--splits", "train", "--workers", "1"]


# script module, the good content of the file it takes, how its command line holds the file
# (a function of the input folder and the file's path), and where the file must be
SCRIPT_INPUTS = [
    ("make_folds", LABELS, _make_folds, "lab.csv"),
    ("find_thresholds", OOF, _thresholds_oof, "m_64_f0_oof.csv"),
    ("find_thresholds", LABELS, _thresholds_labels, "lab.csv"),
    ("blend", OOF, _blend("oof"), "m_64_f0_oof.csv"),
    ("blend", OOF, _blend("test"), "m_64_f0_test.csv"),
    ("blend", LABELS, _blend("labels"), "lab.csv"),
    ("blend", "Id,Predicted\na,\nb,\nc,\nd,\n", _blend("sub"), "sub.csv"),
    ("prepare", LABELS, _prepare, "train.csv"),
    ("predict_tta", "Id\na\nb\n", lambda d, t: ["--arch", "tiny_cnn", "--size", "32", "--runs", d / "runs", "--images",
                                              d, "--ids", t, "--out", d / "out" / "p.csv"], "ids.csv"),
]


# files that are not tables: a config (YAML) and a thresholds file (JSON)
BAD_DOCUMENTS: dict[str, Callable[[Path], None]] = {
    "missing": lambda p: None,
    "empty file": lambda p: p.write_bytes(b""),
    "binary garbage": lambda p: p.write_bytes(bytes(range(256)) * 4),
    "a folder": lambda p: p.mkdir(),
    "a list, not a mapping": lambda p: p.write_text("[1, 2, 3]\n"),
    "unbalanced": lambda p: p.write_text("{lr: [0.1\n"),
}
DOCUMENT_INPUTS = [
    ("train_fold", "cfg.yaml", lambda d, f: ["--arch", "tiny_cnn", "--config", f, "--data-dir", d, "--runs",
                                             d / "runs"]),
    ("predict_tta", "thr.json", lambda d, f: ["--arch", "tiny_cnn", "--size", "32", "--images", d, "--thresholds", f,
                                             "--runs", d / "runs", "--out", d / "out" / "p.csv"]),
]


@pytest.mark.parametrize("bad", list(BAD_DOCUMENTS))
@pytest.mark.parametrize("script, name, argv", DOCUMENT_INPUTS, ids=[f"{s}:{n}" for s, n, _ in DOCUMENT_INPUTS])
def test_every_script_refuses_every_bad_document(tmp_path, script, name, argv, bad):
    import importlib

    d = tmp_path / "in"
    d.mkdir()
    BAD_DOCUMENTS[bad](d / name)
    assert_refused(importlib.import_module(f"hpa.cli.{script}").main, argv(d, d / name), d, f"{script} {name}: {bad}")


@pytest.mark.parametrize("bad", list(BAD_TABLES))
@pytest.mark.parametrize("script, good, argv, name", SCRIPT_INPUTS,
                         ids=[f"{s}:{n}" for s, _, _, n in SCRIPT_INPUTS])
def test_every_script_refuses_every_bad_table(tmp_path, script, good, argv, name, bad):
    import importlib

    main = importlib.import_module(f"hpa.cli.{script}").main
    d = tmp_path / "in"
    d.mkdir()
    table = d / name
    args = argv(d, table)
    if table.exists():
        shutil.rmtree(table) if table.is_dir() else table.unlink()
    BAD_TABLES[bad](table, good)
    line = assert_refused(main, args, d, f"{script} {name}: {bad}", SAYS.get(bad, ""))
    assert name in line, (f"{script} {name}: {bad}: the line does not name the table", line)


OUTPUT_OVER_INPUT = [
    ("make_folds", lambda d: ["--labels", d / "lab.csv", "--n-folds", "2", "--out", d / "lab.csv"]),
    ("find_thresholds", lambda d: ["--oof", d / "m_64_f0_oof.csv", "--labels", d / "lab.csv", "--allow-missing-oof",
                                   "--out", d / "m_64_f0_oof.csv"]),
    ("blend", lambda d: _blend("none")(d, d / "unused.csv")[:-1] + [d / "lab.csv"]),
]


@pytest.mark.parametrize("script, argv", OUTPUT_OVER_INPUT, ids=[s for s, _ in OUTPUT_OVER_INPUT])
def test_no_script_writes_over_its_input(tmp_path, script, argv):
    import importlib

    d = tmp_path / "in"
    d.mkdir()
    (d / "lab.csv").write_text(LABELS)
    (d / "m_64_f0_oof.csv").write_text(OOF)
    assert_refused(importlib.import_module(f"hpa.cli.{script}").main, argv(d), d, f"{script}: --out over an input")


BAD_VALUES = [
    ("make_folds", ["--labels", "lab.csv", "--n-folds", "1", "--out", "f.csv"]),
    ("make_folds", ["--labels", "lab.csv", "--n-folds", "x", "--out", "f.csv"]),
    ("make_folds", ["--labels", "lab.csv", "--duplicates", "merge", "--out", "f.csv"]),
    ("find_thresholds", ["--oof", "m_64_f0_oof.csv", "--labels", "lab.csv", "--method", "best"]),
    ("blend", ["--oof", "m_64_f0_oof.csv", "--test", "m_64_f0_oof.csv", "--rounds", "0"]),
    ("blend", ["--oof", "m_64_f0_oof.csv", "--test", "m_64_f0_oof.csv", "--cv-folds", "²"]),
    ("prepare", ["--data-dir", ".", "--size", "-3"]),
    ("prepare", ["--data-dir", ".", "--size", "32", "--shard", "3/2"]),
    ("predict_tta", ["--arch", "tiny_cnn", "--size", "32", "--tta", "9"]),
    ("predict_tta", ["--arch", "tiny_cnn", "--size", "32", "--explain", "28"]),
    ("predict_tta", ["--bundle", "b", "--images", ".", "--tta", "2"]),
    ("train_fold", ["--arch", "tiny_cnn", "--set", "lr"]),
    ("train_fold", ["--arch", "tiny_cnn", "--layer-decay", "true"]),
    ("ablate", ["--data-dir", ".", "--arch", "tiny_cnn", "--size", "32", "--factors", "loss", "--folds", "0", "x"]),
    ("embed", ["--size", "32", "--data-dir", "."]),
    ("make_demo", ["--out-dir", "demo", "--size", "16"]),
]


@pytest.mark.parametrize("script, argv", BAD_VALUES, ids=[f"{s}:{' '.join(a[-2:])}" for s, a in BAD_VALUES])
def test_every_bad_value_is_one_line(tmp_path, monkeypatch, script, argv):
    import importlib

    monkeypatch.chdir(tmp_path)
    (tmp_path / "lab.csv").write_text(LABELS)
    (tmp_path / "m_64_f0_oof.csv").write_text(OOF)
    assert_refused(importlib.import_module(f"hpa.cli.{script}").main, argv, tmp_path, f"{script} {argv}")


# Property-based: the free-text parsers return a value or raise the toolkit's one-line error, never
# anything else, whatever the text.
@settings(max_examples=150, deadline=None)
@given(st.text(max_size=12))
def test_target_and_tta_parsers_never_crash(text):
    from hpa.data.labels import parse_target
    from hpa.prediction.inference import parse_tta

    for parse in (parse_target, parse_tta):
        try:
            out = parse(text)
        except HPAError as e:
            assert "\n" not in str(e)
        else:
            assert out and len(out) == len(set(out))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40))
def test_any_id_is_a_safe_file_name_or_refused(text):
    from hpa.data.labels import validate_id

    try:
        sid = validate_id(text)
    except HPAError:
        return
    assert sid == text and "/" not in sid and "\\" not in sid and sid not in (".", "..") and "\0" not in sid


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=6), st.integers(-3, 12), st.lists(st.sampled_from(["id", "hflip", "x"]))))
def test_predict_options_take_any_tta_or_refuse_it_in_one_line(tta):
    from hpa.prediction.inference import DIHEDRAL, PredictOptions

    try:
        views = PredictOptions.make(tta=tta).tta
    except HPAError as e:
        assert "\n" not in str(e)
    else:
        assert views and set(views) <= set(DIHEDRAL)


def test_parse_tta_takes_what_int_takes():
    """Found by Hypothesis: '0\x1f' is a digit after str.strip but not to int()."""
    from hpa.prediction.inference import parse_tta

    with pytest.raises(HPAError, match="a count of dihedral transforms"):
        parse_tta("0\x1f")
    assert parse_tta(" 2\x1f") == ("id", "hflip")


def test_a_table_of_unicode_digits_is_refused_not_a_traceback(tmp_path):
    from hpa.data.labels import read_folds, read_labels
    from hpa.errors import LabelError

    (tmp_path / "lab.csv").write_text("Id,Target\na,²\n")
    with pytest.raises(LabelError, match="is not a class index"):
        read_labels(tmp_path / "lab.csv")
    (tmp_path / "folds.csv").write_text("Id,fold\na,١\n")
    with pytest.raises(LabelError, match="is not an integer"):
        read_folds(tmp_path / "folds.csv")


# Files that are not tables or documents: a model's files and an image folder. Each kind is a good
# file made once, then a catalogue of what a user can put in its place: name -> (how the input folder
# `d` is spoiled, what the one line must say). Built without training: a network of the toolkit with
# its initial weights is a checkpoint or a bundle like any other.
def _checkpoint(path: Path, arch: str = "tiny_cnn", fold: int = 0, **change) -> None:
    from hpa.config import load_arch_config
    from hpa.core.checkpoint import save_checkpoint
    from hpa.models import build_model

    cfg = load_arch_config(arch, size=32, fold=fold, pretrained="none")
    state = {"model": build_model(arch, **cfg.model).state_dict(), "config": cfg.model_dump(), "epoch": 1}
    for key, edit in change.items():
        state[key] = edit(state[key])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, state)


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _torch_bytes(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _renamed(state: dict) -> dict:  # a network whose layers another version named otherwise
    return {f"net.{k}": v for k, v in state.items()}


BEST = Path("runs") / "tiny_cnn_32" / "f0" / "best.pt"  # hpa.data.layout.run_file
BAD_CHECKPOINTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing": (lambda d: None, "not found; train that fold"),
    "a folder": (lambda d: (d / BEST).mkdir(parents=True), "not found; train that fold"),
    "truncated": (lambda d: (_checkpoint(d / BEST), _cut(d / BEST)), "cut short or not a checkpoint"),
    "binary garbage": (lambda d: _write(d / BEST, bytes(range(256)) * 64), "cut short or not a checkpoint"),
    "another arch's": (lambda d: _checkpoint(d / BEST, "gapnet_pl"), "is a checkpoint of gapnet_pl_32 fold 0"),
    "another fold's": (lambda d: _checkpoint(d / BEST, fold=1), "fold 1, not of tiny_cnn_32 fold 0"),
    "another program's (weights alone)": (lambda d: _write(d / BEST, _torch_bytes({"w": 1})),
                                          "not a training checkpoint of this toolkit"),
    "another version's config": (lambda d: _checkpoint(d / BEST, config=lambda c: {**c, "mixup_alpha": 0.2}),
                                 "its saved config is not valid today"),
    "another version's layer names": (lambda d: _checkpoint(d / BEST, model=_renamed),
                                      "its weights do not fit the tiny_cnn network"),
    "another version's model settings": (lambda d: _checkpoint(d / BEST, config=lambda c: {
        **c, "model": {**c["model"], "stem_kind": "deep"}}), "do not build a tiny_cnn network"),
}


def _one_sample(d: Path, side: int = 32, name: str = "s1") -> Path:
    import numpy as np

    from hpa.data.images import write_sample_png

    d.mkdir(parents=True, exist_ok=True)
    write_sample_png(d, name, np.random.default_rng(0).integers(0, 255, (side, side, 4), dtype=np.uint8))
    return d


@pytest.mark.parametrize("bad", list(BAD_CHECKPOINTS))
def test_predict_refuses_every_bad_checkpoint(tmp_path, bad):
    from hpa.cli.predict_tta import main

    d = tmp_path / "in"
    _one_sample(d / "imgs")
    spoil, says = BAD_CHECKPOINTS[bad]
    spoil(d)
    assert_refused(main, ["--arch", "tiny_cnn", "--size", "32", "--folds", "0", "--runs", d / "runs", "--images",
                          d / "imgs", "--out", d / "out" / "p.csv", "--no-report"], d, f"best.pt: {bad}", says)


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory) -> Path:
    """A two-member bundle (tiny_cnn and gapnet_pl at 32 px, one fold each) as export_bundle writes it."""
    import numpy as np

    from hpa.config import load_arch_config
    from hpa.models import build_model
    from hpa.prediction.bundle import write_bundle
    from hpa.prediction.ensemble import Ensemble, Member

    members = []
    for arch in ("tiny_cnn", "gapnet_pl"):
        cfg = load_arch_config(arch, size=32, fold=0, pretrained="none")
        members.append(Member(f"{arch}_32", 32, [build_model(arch, **cfg.model).eval()], ("id",), [32], "off", [0],
                              [cfg], [{}]))
    ens = Ensemble(members, "equal", np.full(2, 0.5), np.full(NUM_CLASSES, 0.5))
    summary = {"oof_macro_f1": 0.1, "oof_macro_f1_at_0.5": 0.1, "oof_rows": 4, "threshold_method": "flat"}
    return write_bundle(ens, tmp_path_factory.mktemp("bundle") / "b", training_data={"labels": {}, "folds_sha256": ""},
                        summary=summary)


def _config(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def spoil(b: Path) -> None:
        import json

        c = json.loads((b / "config.json").read_text())
        change(c)
        (b / "config.json").write_text(json.dumps(c))
    return spoil


def _weights_of(arch: str, edit: Callable[[dict], dict] = lambda s: s) -> Callable[[Path], None]:
    """The tiny_cnn member's file replaced by `arch`'s weights (edited), its sha256 made to match: a
    file that is what config.json says it is by every check but its content."""
    def spoil(b: Path) -> None:
        import json

        from safetensors.torch import save_file

        from hpa.config import load_arch_config
        from hpa.core.digests import file_sha256
        from hpa.models import build_model

        c = json.loads((b / "config.json").read_text())
        member = next(m for m in c["members"] if m["arch"] == "tiny_cnn")
        rel = member["files"][0]
        model = build_model(arch, **load_arch_config(arch, size=32, pretrained="none").model)
        save_file(edit({k: v.contiguous() for k, v in model.state_dict().items()}), str(b / rel),
                  metadata={"arch": "tiny_cnn", "size": "32", "fold": "0"})
        member["sha256"][rel] = file_sha256(b / rel)
        (b / "config.json").write_text(json.dumps(c))
    return spoil


def _first_weights(b: Path) -> Path:
    return next(b.glob("weights/*/*.safetensors"))


BAD_BUNDLES: dict[str, tuple[Callable[[Path], None], str]] = {
    "config.json missing": (lambda b: (b / "config.json").unlink(), "not an hpa-toolkit bundle"),
    "config.json a folder": (lambda b: (b / "config.json").unlink() or (b / "config.json").mkdir(),
                             "config.json: cannot be read"),
    "config.json truncated": (lambda b: _cut(b / "config.json"), "config.json: not JSON"),
    "config.json binary": (lambda b: (b / "config.json").write_bytes(bytes(range(256))), "config.json: not JSON"),
    "config.json a list": (lambda b: (b / "config.json").write_text("[1, 2]"), "not an hpa-toolkit bundle"),
    "a newer format's": (_config(lambda c: c.update(format_version=99)), "bundle format 99 is newer"),
    "format_version as text": (_config(lambda c: c.update(format_version="1")), "format_version: expected"),
    "no toolkit version": (_config(lambda c: c.pop("toolkit_version")), "toolkit_version: expected"),
    "a member not a mapping": (_config(lambda c: c["members"].__setitem__(0, "tiny_cnn_32")), "members[0]"),
    "a member's size as text": (_config(lambda c: c["members"][0].update(size="32")), ".size: expected"),
    "weights truncated": (lambda b: _cut(_first_weights(b)), "sha256 differs"),
    "weights missing": (lambda b: _first_weights(b).unlink(), "weight file of the bundle not found"),
    "another arch's weights": (_weights_of("gapnet_pl"), "/f0.safetensors: its weights do not fit the tiny_cnn"),
    "another version's layer names": (_weights_of("tiny_cnn", _renamed), "do not fit the tiny_cnn network"),
}


@pytest.mark.parametrize("bad", list(BAD_BUNDLES))
def test_predict_refuses_every_bad_bundle(tmp_path, good_bundle, bad):
    from hpa.cli.predict_tta import main

    d = tmp_path / "in"
    b = Path(shutil.copytree(good_bundle, d / "bundle"))
    _one_sample(d / "imgs")
    spoil, says = BAD_BUNDLES[bad]
    spoil(b)
    assert_refused(main, ["--bundle", b, "--images", d / "imgs", "--out", d / "out" / "p.csv", "--no-report"], d,
                   f"bundle: {bad}", says)


def test_a_bundle_of_another_toolkit_version_of_the_same_format_loads(tmp_path, good_bundle):
    """The format version is the contract; the toolkit version that wrote a bundle is provenance."""
    from hpa.prediction.bundle import load_bundle

    b = Path(shutil.copytree(good_bundle, tmp_path / "b"))
    _config(lambda c: c.update(toolkit_version="0.1.0"))(b)
    assert load_bundle(b).config["toolkit_version"] == "0.1.0"


def _blend_json(d: Path, text: str | None) -> Path:
    """A recipe folder `d/recipe` holding `text` as its blend.json (None: none; "/": a folder)."""
    recipe = d / "recipe"
    recipe.mkdir(parents=True, exist_ok=True)
    if text == "/":
        (recipe / "blend.json").mkdir()
    elif text is not None:
        (recipe / "blend.json").write_text(text)
    return recipe


GOOD_BLEND = ('{"models": ["tiny_cnn_32"], "weighting": "equal", "weights": [1.0], "threshold_method": "flat", '
              '"thresholds": [' + ", ".join(["0.5"] * NUM_CLASSES) + '], "test_files": {"tiny_cnn_32": '
              '["predictions/tiny_cnn_32_f0_test.csv"]}}')
# export_bundle.py: a recipe folder and the bundle folder, each spoilt: name -> (its command line, given
# the input folder `d`, what the line says). The good bundle folder is d/out/bundle.
BAD_EXPORTS: dict[str, tuple[Callable[[Path], list], str]] = {
    "no blend.json": (lambda d: ["--from", _blend_json(d, None)], "blend.json: file not found"),
    "blend.json empty": (lambda d: ["--from", _blend_json(d, "")], "blend.json: not a blend summary"),
    "blend.json truncated": (lambda d: ["--from", _blend_json(d, GOOD_BLEND[:80])], "blend.json: not a blend summary"),
    "blend.json binary": (lambda d: ["--from", _blend_json(d, "\x00\xff" * 40)], "blend.json: not a blend summary"),
    "blend.json a list": (lambda d: ["--from", _blend_json(d, "[1]")], "a JSON list, not a mapping"),
    "blend.json of an older version": (lambda d: ["--from", _blend_json(d, '{"models": ["a"]}')], "older version"),
    "blend.json without weights": (lambda d: ["--from", _blend_json(d, GOOD_BLEND.replace('"weights": [1.0], ', ''))],
                                   "blend.json: weights: not as blend.py writes it"),
    "blend.json a folder": (lambda d: ["--from", _blend_json(d, "/")], "blend.json: a folder, not a"),
    "--from a file": (lambda d: ["--from", d / "lab.csv"], "--from"),
    "--from missing": (lambda d: ["--from", d / "nowhere"], "no such folder"),
    "--out-dir a file": (lambda d: ["--from", _blend_json(d, GOOD_BLEND), "--out-dir", d / "lab.csv"],
                         "a file, not a folder"),
    "--out-dir no bundle, packaged": (lambda d: ["--out-dir", _blend_json(d, None), "--bioimageio", d / "b.zip"],
                                      "not an hpa-toolkit bundle"),
}


@pytest.mark.parametrize("bad", list(BAD_EXPORTS))
def test_export_bundle_refuses_every_bad_recipe_or_bundle_folder(tmp_path, bad):
    from hpa.cli.export_bundle import main

    d = tmp_path / "in"
    d.mkdir()
    (d / "lab.csv").write_text(LABELS)
    argv, says = BAD_EXPORTS[bad]
    args = argv(d)
    if "--out-dir" not in args:
        args += ["--out-dir", d / "out" / "bundle"]
    assert_refused(main, args, d, f"export_bundle: {bad}", says)


# embed.py --images: a folder of own images, spoilt: name -> (how `folder` is made, what the line says)
def _stains(folder: Path, names: list[str], side: int = 32) -> None:
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        cv2.imwrite(str(folder / n), np.random.default_rng(0).integers(0, 255, (side, side), dtype=np.uint8))


ALL4 = ["x_red.png", "x_green.png", "x_blue.png", "x_yellow.png"]
BAD_FOLDERS: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty": (lambda f: f.mkdir(), "no readable"),
    "a file": (lambda f: f.write_text("x"), "no such directory"),
    "missing": (lambda f: None, "no such directory"),
    "some stains only": (lambda f: _stains(f, ALL4[:2]), "x_blue.png: channel file not found"),
    "two files for a stain, by case": (lambda f: _stains(f, [*ALL4, "x_Red.PNG"]), "two files for the red stain"),
    "a stain as .tif and .TIF": (lambda f: _stains(f, [*ALL4[1:], "x_red.tif", "x_RED.TIF"]),
                                 "two files for the red stain"),
    "1 px images": (lambda f: _stains(f, ALL4, side=1), "smaller than the minimum side of 32 px"),
    "8 px images": (lambda f: _stains(f, [n.replace("x_", "X_").replace("png", "PNG") for n in ALL4], side=8),
                    "X_red.PNG: 8 x 8 px is smaller than the minimum side"),
    "a 0-byte stain": (lambda f: _stains(f, ALL4) or (f / "x_green.png").write_bytes(b""), "empty file"),
}


@pytest.mark.parametrize("bad", list(BAD_FOLDERS))
def test_embed_refuses_every_bad_image_folder(tmp_path, bad):
    from hpa.cli.embed import main

    d = tmp_path / "in"
    d.mkdir()
    make, says = BAD_FOLDERS[bad]
    make(d / "imgs")
    assert_refused(main, ["--images", d / "imgs", "--out-dir", tmp_path / "emb", "--arch", "tiny_cnn", "--size", "32",
                          "--tta", "1", "--device", "cpu"], d, f"embed --images: {bad}", says)
