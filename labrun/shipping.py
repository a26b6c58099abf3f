"""Values crossing between a kernel and a worker: packed, unpacked and fingerprinted.

Both sides need this (the kernel packs a cell's inputs and unpacks its results, the worker the
reverse), so it lives in the core and imports neither IPython nor Dask.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import sys
import types
from typing import Any, Literal

import cloudpickle

Packed = tuple[Literal["module", "raw", "pickle"], Any]


def _is_raw(value: Any) -> bool:
    """Arrays and tensors: Dask's own serializers move these without extra copies."""
    root = type(value).__module__.split(".", 1)[0]
    return root in {"numpy", "torch"} and type(value).__name__ in {"ndarray", "Tensor"}


class _CpuPickler(cloudpickle.CloudPickler):
    """Pickles torch tensors and parameters on a GPU as CPU ones (for a kernel without CUDA)."""

    def reducer_override(self, obj: Any) -> Any:
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor) and obj.device.type != "cpu":
            if isinstance(obj, torch.nn.Parameter):
                return torch.nn.Parameter, (obj.detach().cpu(), obj.requires_grad)
            return obj.detach().cpu().__reduce_ex__(5)
        return super().reducer_override(obj)


def pack(value: Any, *, cuda: bool = True) -> Packed:
    """``value`` in the form it travels in; raises when it cannot be pickled."""
    if isinstance(value, types.ModuleType):
        return "module", value.__name__
    if _is_raw(value):
        # numpy 2 arrays have a device too, the string "cpu"; torch's has a type.
        device = getattr(getattr(value, "device", None), "type", "cpu")
        if not cuda and device != "cpu":
            value = value.detach().cpu()
        return "raw", value
    if cuda:
        return "pickle", cloudpickle.dumps(value, protocol=5)
    buffer = io.BytesIO()
    _CpuPickler(buffer, protocol=5).dump(value)
    return "pickle", buffer.getvalue()


def unpack(packed: Packed) -> Any:
    kind, data = packed
    if kind == "module":
        return importlib.import_module(data)
    if kind == "pickle":
        return cloudpickle.loads(data)
    return data


def pack_all(
    values: dict[str, Any], *, cuda: bool = True
) -> tuple[dict[str, Packed], dict[str, str]]:
    """Each value packed; the names that could not be, with why."""
    packed: dict[str, Packed] = {}
    failed: dict[str, str] = {}
    for name, value in values.items():
        try:
            packed[name] = pack(value, cuda=cuda)
        except Exception as err:  # noqa: BLE001 - pickling raises anything; say which value
            failed[name] = f"{type(value).__name__} cannot be pickled: {err}"
    return packed, failed


def unpack_all(packed: dict[str, Packed]) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for name, item in packed.items():
        try:
            values[name] = unpack(item)
        except ModuleNotFoundError as err:
            failed[name] = f"module {err.name!r} is not installed here"
        except Exception as err:  # noqa: BLE001 - unpickling raises anything; say which value
            failed[name] = f"could not be unpickled: {type(err).__name__}: {err}"
    return values, failed


def digest(packed: Packed) -> str:
    kind, data = packed
    h = hashlib.sha256()
    if kind == "raw":
        h.update(f"{type(data).__module__}.{type(data).__name__}".encode())
        array = data.detach().cpu().numpy() if hasattr(data, "detach") else data
        h.update(f"{array.dtype}{array.shape}".encode())
        h.update(memoryview(array.tobytes() if not array.flags.c_contiguous else array).cast("B"))
    else:
        h.update(kind.encode())
        h.update(data.encode() if isinstance(data, str) else data)
    return h.hexdigest()


def ship(
    values: dict[str, Any], *, local_roots: list[str]
) -> tuple[dict[str, Packed], dict[str, str]]:
    """Inputs for the worker (modules go by name), and what cannot be shipped."""
    packed: dict[str, Packed] = {}
    failed: dict[str, str] = {}
    for name, value in values.items():
        _register_local(value, local_roots)
        try:
            packed[name] = pack(value)
        except Exception as err:  # noqa: BLE001 - pickling raises anything; name the value
            failed[name] = f"{type(value).__name__}: {err}"
    return packed, failed


def _register_local(value: Any, roots: list[str]) -> None:
    """Ship functions and classes from the notebook's own .py files by value.

    The worker may not have those files; installed packages it does have.
    """
    name = getattr(value, "__module__", None) or type(value).__module__
    module = sys.modules.get(name.split(".")[0]) if name else None
    file = getattr(module, "__file__", None) if module else None
    if module is None or not file or name == "__main__":
        return
    if any(file.startswith(root) for root in roots) and "site-packages" not in file:
        with contextlib.suppress(ValueError):
            cloudpickle.register_pickle_by_value(module)


def digests(packed: dict[str, Packed]) -> dict[str, str]:
    return {name: digest(item) for name, item in packed.items()}
