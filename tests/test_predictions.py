import numpy as np
import pytest

from hpa.data.layout import parse_prediction_name as parse_name
from hpa.data.predictions import COLUMNS, read_predictions, write_predictions
from hpa.errors import PredictionError


def test_roundtrip_and_name(tmp_path):
    p = tmp_path / "se_resnext50_768_f3_oof.csv"
    probs = np.random.default_rng(0).random((5, 28))
    write_predictions(p, [f"id{i}" for i in range(5)], probs)
    ids, back = read_predictions(p)
    assert ids == [f"id{i}" for i in range(5)]
    assert np.allclose(back, probs)
    assert parse_name(p) == {"arch": "se_resnext50", "size": 768, "fold": 3, "kind": "oof",
                             "model": "se_resnext50_768"}
    with pytest.raises(PredictionError, match="name does not follow"):
        parse_name(tmp_path / "model_oof.csv")


def _csv(tmp_path, rows, header=None):
    p = tmp_path / "m_64_f0_test.csv"
    p.write_text(",".join(header or COLUMNS) + "\n" + "\n".join(rows) + "\n")
    return p


ZEROS = ",".join(["0.1"] * 28)


@pytest.mark.parametrize("rows, header, message", [
    ([f"a,{ZEROS}", f"a,{ZEROS}"], None, r"row 3: duplicate Id 'a'"),
    ([f"a,nan,{ZEROS[4:]}"], None, r"row 2, column 0: value nan is NaN or infinite"),
    ([f"a,inf,{ZEROS[4:]}"], None, r"NaN or infinite"),
    ([f"a,1.5,{ZEROS[4:]}"], None, r"row 2, column 0: probability 1.5 outside \[0, 1\]"),
    ([f"a,-0.1,{ZEROS[4:]}"], None, r"outside \[0, 1\]"),
    ([f"a,{ZEROS[4:]}"], COLUMNS[:-1], r"expected 29 columns"),
    ([f"../x,{ZEROS}"], None, r"row 2: invalid sample Id"),
    ([f"a,abc,{ZEROS[4:]}"], None, r"non-numeric"),
])
def test_bad_prediction_files_named(tmp_path, rows, header, message):
    p = _csv(tmp_path, rows, header)
    with pytest.raises(PredictionError, match=message) as e:
        read_predictions(p)
    assert str(p) in str(e.value)
