"""Values packed for the trip between a kernel and a worker (labrun.shipping)."""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import pytest

from labrun import shipping


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ({"lr": 0.1, "sizes": [1, 2]}, "pickle"),
        (np.arange(6).reshape(2, 3), "raw"),
        (json, "module"),
    ],
    ids=["a dict", "an array", "a module"],
)
def test_a_value_comes_back_as_it_went(value: Any, kind: str) -> None:
    packed = shipping.pack(value)
    assert packed[0] == kind
    back = shipping.unpack(packed)
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(back, value)
    else:
        assert back == value


def test_what_cannot_be_pickled_is_named_and_the_rest_still_goes() -> None:
    packed, failed = shipping.pack_all({"ok": 1, "lock": threading.Lock()})
    assert list(packed) == ["ok"]
    assert failed["lock"].startswith("lock cannot be pickled")
    values, missing = shipping.unpack_all({**packed, "gone": ("module", "no_such_module_xyz")})
    assert values == {"ok": 1}
    assert missing == {"gone": "module 'no_such_module_xyz' is not installed here"}


def test_a_digest_follows_the_content() -> None:
    a, b = np.zeros(3), np.zeros(3)
    assert shipping.digest(shipping.pack(a)) == shipping.digest(shipping.pack(b))
    assert shipping.digest(shipping.pack(a)) != shipping.digest(shipping.pack(np.ones(3)))
    # Same bytes, another shape: another value.
    assert shipping.digest(shipping.pack(a.reshape(3, 1))) != shipping.digest(shipping.pack(a))
    assert shipping.digests({"x": shipping.pack(1)}) == {"x": shipping.digest(shipping.pack(1))}
