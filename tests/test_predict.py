import itertools

import pytest
import torch

from hpa.errors import ConfigError
from hpa.prediction.inference import DIHEDRAL, dihedral, parse_tta


def test_dihedral_group_is_the_8_symmetries_of_the_square():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    outs = {name: dihedral(x, name) for name in DIHEDRAL}
    assert len({tuple(o.flatten().tolist()) for o in outs.values()}) == 8  # all distinct
    keys = {tuple(o.flatten().tolist()) for o in outs.values()}
    for a, b in itertools.product(DIHEDRAL, repeat=2):  # closed under composition
        assert tuple(dihedral(dihedral(x, a), b).flatten().tolist()) in keys
    m = x[0, 0]
    assert torch.equal(outs["hflip"][0, 0], m.flip(1))
    assert torch.equal(outs["transpose"][0, 0], m.T)
    assert torch.equal(outs["antitranspose"][0, 0], m.flip(0).flip(1).T)
    assert torch.equal(outs["rot90"][0, 0], torch.rot90(m, 1))


def test_parse_tta():
    assert parse_tta("2") == ("id", "hflip")
    assert parse_tta("8") == DIHEDRAL
    assert parse_tta("id,rot90") == ("id", "rot90")
    for bad in ("0", "9", "id,spin", ","):
        with pytest.raises(ConfigError, match="--tta"):
            parse_tta(bad)
