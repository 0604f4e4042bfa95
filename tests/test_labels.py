
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from hpa.data.labels import (
    CLASS_NAMES,
    NUM_CLASSES,
    LabelError,
    format_target,
    from_multihot,
    labels_matrix,
    parse_target,
    read_ids,
    read_labels,
    to_multihot,
    validate_id,
)


def test_class_names_in_kaggle_index_order():
    assert NUM_CLASSES == 28
    assert CLASS_NAMES[0] == "Nucleoplasm"
    assert CLASS_NAMES[2] == "Nucleoli"
    assert CLASS_NAMES[23] == "Mitochondria"
    assert CLASS_NAMES[25] == "Cytosol"
    assert CLASS_NAMES[27] == "Rods & rings"
    assert len(set(CLASS_NAMES)) == 28


def test_target_multihot_roundtrip():
    classes = parse_target("7 1 2 0")
    assert classes == [0, 1, 2, 7]
    v = to_multihot(classes)
    assert v.shape == (28,) and v.sum() == 4 and v[7] == 1
    assert from_multihot(v) == classes
    assert format_target(from_multihot(v)) == "0 1 2 7"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "labels.csv"
    p.write_text(text)
    return p


def test_read_labels_builds_matrix(tmp_path):
    df = read_labels(write(tmp_path, "Id,Target\na1,0 25\nb2,27\n"))
    y = labels_matrix(df)
    assert list(df["Id"]) == ["a1", "b2"]
    assert y.shape == (2, 28) and y[0, 0] == y[0, 25] == y[1, 27] == 1 and y.sum() == 3


@pytest.mark.parametrize("body, message", [
    ("a1,0\nb2,28\n", r"labels.csv, row 3: unknown class index 28"),
    ("a1,0\nb2,1 x\n", r"labels.csv, row 3: malformed Target"),
    ("a1,0\nb2,-1\n", r"labels.csv, row 3: malformed Target"),
    ("a1,0\nb2,\n", r"labels.csv, row 3: empty or missing Target"),
    ("a1,0\na1,1\n", r"labels.csv, row 3: duplicate Id 'a1' \(first at row 2\)"),
    ("a1,0\n../etc/passwd,1\n", r"labels.csv, row 3: invalid sample Id '../etc/passwd'"),
    ("a1,0\nsub/x,1\n", r"labels.csv, row 3: invalid sample Id 'sub/x'"),
    ("a..b,0\n", r"labels.csv, row 2: invalid sample Id 'a..b'"),
    ("a1,0\nc\\d,1\n", r"row 3: invalid sample Id"),
])
def test_bad_label_rows_are_named(tmp_path, body, message):
    with pytest.raises(LabelError, match=message):
        read_labels(write(tmp_path, "Id,Target\n" + body))


def test_missing_columns_and_file(tmp_path):
    with pytest.raises(LabelError, match="missing column"):
        read_labels(write(tmp_path, "Name,Target\na,1\n"))
    with pytest.raises(LabelError, match="file not found"):
        read_ids(tmp_path / "nope.csv")


def test_validate_id_accepts_real_id_forms():
    assert validate_id("000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0") == "000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0"
    assert validate_id("10580_1610_C1_1") == "10580_1610_C1_1"
    for bad in ("", "..", "/abs", ".hidden", "a b"):
        with pytest.raises(LabelError):
            validate_id(bad)


def test_real_train_table_reads_with_real_frequencies():
    df = read_labels(shared_path("kaggle-hpa-2018", "train.csv"))
    y = labels_matrix(df)
    assert len(df) == 31072
    counts = y.sum(0)
    assert counts.argmax() == 0 and counts[0] == 12885  # Nucleoplasm
    assert counts.argmin() == 27 and counts[27] == 11  # Rods & rings
    ext = read_ids(shared_path("kaggle-hpa-2018", "HPAv18RBGY_wodpl.csv"))
    assert len(ext) == 74606 and ext[0] == "10580_1610_C1_1"
    assert np.all(y.sum(1) >= 1)


def test_train_and_external_tables_are_read_as_one(tmp_path):
    from hpa.data.labels import read_label_tables

    (tmp_path / "train.csv").write_text("Id,Target\na,0\nb,1 2\n")
    (tmp_path / "external.csv").write_text("Id,Target\n10_1_A1_1,27\n")
    both = read_label_tables([tmp_path / "train.csv", tmp_path / "external.csv"])
    assert both["Id"].tolist() == ["a", "b", "10_1_A1_1"] and both["table"].tolist() == [0, 0, 1]
    y = labels_matrix(both)
    assert y.shape == (3, 28) and y[1, [1, 2]].tolist() == [1, 1] and y[2, 27] == 1 and y.sum() == 4
    (tmp_path / "external.csv").write_text("Id,Target\nb,3\n")
    with pytest.raises(LabelError, match=r"external.csv: Id 'b' is also in .*train.csv"):
        read_label_tables([tmp_path / "train.csv", tmp_path / "external.csv"])


def test_every_table_reader_refuses_a_header_without_rows_and_a_folds_table_lists_an_id_once(tmp_path):
    """The class "a table trusted as read", closed in its readers: each of them on a header alone,
    and a folds table naming one Id in two folds."""
    from hpa.data.labels import read_folds, read_ids, read_labels
    from hpa.data.predictions import COLUMNS, read_predictions
    from hpa.errors import PredictionError

    for reader, header in ((read_labels, "Id,Target"), (read_ids, "Id"), (read_folds, "Id,fold")):
        p = tmp_path / f"{reader.__name__}.csv"
        p.write_text(header + "\n")
        with pytest.raises(LabelError, match=f"{p.name}: has a header and no rows"):
            reader(p)
    p = tmp_path / "m_64_f0_oof.csv"
    p.write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(PredictionError, match="has a header and no rows"):
        read_predictions(p)
    folds = tmp_path / "folds.csv"
    folds.write_text("Id,fold\na,0\nb,1\na,1\n")
    with pytest.raises(LabelError, match=r"folds.csv, row 4: duplicate Id 'a' \(first at row 2\)"):
        read_folds(folds)


def test_validate_id_holds_exactly():
    assert validate_id("10580_1610_C1_1") == "10580_1610_C1_1"
    for bad in ("abc\n", "abc\r", "a b", "../x", "a/b", "", "_lead", "a..b", "ab\n\n"):
        with pytest.raises(LabelError):
            validate_id(bad)
