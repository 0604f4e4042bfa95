"""The one check of a count typed by a user, for flags, API arguments and option objects alike."""

from __future__ import annotations

import numbers

from hpa.errors import ConfigError


def count(name: str, v: object, low: int = 1) -> int:
    """`v` as an int >= `low`; anything else (a bool, a float, a string, a smaller number) is one
    line naming `name` (`--batch-size 0` or `batch_size=0`, as the caller spells it)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
        where = f"{name} {v}" if name.startswith("--") else f"{name}={v!r}"
        raise ConfigError(f"{where}: expected an integer >= {low}")
    return int(v)
