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


def assert_refused(main: Callable, argv: list, inputs: Path, case: str, says: str = "") -> None:
    before = digests(inputs)
    try:
        code, err = run_script(main, argv)
    except Exception as e:  # a traceback: the class of fault this file exists for
        pytest.fail(f"{case}: {type(e).__name__}: {e}")
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, (case, code, err[-1500:])
    assert says in lines[0], (case, lines[0])
    assert digests(inputs) == before, case  # nothing of the user's changed


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
    assert_refused(main, args, d, f"{script} {name}: {bad}", SAYS.get(bad, ""))


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
