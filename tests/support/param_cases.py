"""One table of parameter values, read the same way by every place a user types one: the
CLI's ``-p NAME VALUE``, ``%mlparams NAME=VALUE`` and the sidebar's form (the server's
``/params/check``). Each test runs every row through its own door."""

from __future__ import annotations

from typing import Any

import pytest

# (what the user types, the value it means)
VALUES: list[tuple[str, Any]] = [
    ("true", True),
    ("True", True),
    ("false", False),
    ("False", False),
    ("null", None),
    ("None", None),
    ("3", 3),
    ("-2", -2),
    ("0.5", 0.5),
    ("1e-3", 0.001),
    ("[1, 2]", [1, 2]),
    ("[true, null]", [True, None]),
    ("[True, None]", [True, None]),
    ('{"a": 1}', {"a": 1}),
    ("'unet'", "unet"),
    ('"small model"', "small model"),
    ("unet", "unet"),
]

# (what the user types, part of the message that refuses it)
REFUSED: list[tuple[str, str]] = [
    ("compute()", "'compute()' is not a literal value"),
    ("b'raw'", "is a bytes, which a run's parameters cannot record"),
]

values = pytest.mark.parametrize(("text", "value"), VALUES, ids=[t for t, _ in VALUES])
refused = pytest.mark.parametrize(("text", "message"), REFUSED, ids=[t for t, _ in REFUSED])
