"""GPUs as NVML reports them, behind one small interface.

:class:`NvmlGpus` is the real thing (nvidia-ml-py). :class:`FakeNvml` stands in for it on
machines without a GPU, for tests and demos only: it is chosen when ``LABRUN_FAKE_GPUS``
names a number of devices, never silently.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

FAKE_GPUS = "LABRUN_FAKE_GPUS"
# Which physical GPUs (NVML indices) a worker owns, e.g. "0" for a worker pinned to GPU 0.
WORKER_GPUS = "LABRUN_WORKER_GPUS"


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    uuid: str
    memory_total: int


@dataclass(frozen=True)
class GpuReading:
    utilization: float | None
    memory_used: int | None
    memory_total: int | None
    temperature: float | None
    power: float | None


class Gpus(Protocol):
    def devices(self) -> list[GpuDevice]: ...

    def read(self, index: int) -> GpuReading: ...

    def driver(self) -> str | None: ...

    def close(self) -> None: ...


class NvmlGpus:
    """Every GPU the NVIDIA driver sees, read through nvidia-ml-py."""

    def __init__(self) -> None:
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._handles = [
            pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
        ]

    def devices(self) -> list[GpuDevice]:
        nvml = self._nvml
        out = []
        for index, handle in enumerate(self._handles):
            name = nvml.nvmlDeviceGetName(handle)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            out.append(
                GpuDevice(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else name,
                    uuid=uuid.decode() if isinstance(uuid, bytes) else uuid,
                    memory_total=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                )
            )
        return out

    def driver(self) -> str | None:
        """The NVIDIA driver's version."""
        try:
            version = self._nvml.nvmlSystemGetDriverVersion()
        except self._nvml.NVMLError:
            return None
        return version.decode() if isinstance(version, bytes) else version

    def read(self, index: int) -> GpuReading:
        nvml = self._nvml
        handle = self._handles[index]

        def attempt(read: Callable[[], Any]) -> Any:
            # A field a GPU does not support (power on some boards) is None, not an error.
            try:
                return read()
            except nvml.NVMLError:
                return None

        util = attempt(lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        memory = attempt(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        temperature = attempt(
            lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
        )
        power_mw = attempt(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
        return GpuReading(
            utilization=None if util is None else float(util),
            memory_used=None if memory is None else int(memory.used),
            memory_total=None if memory is None else int(memory.total),
            temperature=None if temperature is None else float(temperature),
            power=None if power_mw is None else float(power_mw) / 1000,
        )

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass


class FakeNvml:
    """A stand-in for NVML with ``count`` idle 16 GiB devices. Tests and demos only."""

    MEMORY = 16 * 1024**3

    def __init__(self, count: int) -> None:
        self.count = count

    def devices(self) -> list[GpuDevice]:
        return [
            GpuDevice(i, "Fake NVML GPU", f"GPU-fake-{i:04d}", self.MEMORY)
            for i in range(self.count)
        ]

    def driver(self) -> str | None:
        return "fake"

    def read(self, index: int) -> GpuReading:
        return GpuReading(
            utilization=0.0,
            memory_used=0,
            memory_total=self.MEMORY,
            temperature=30.0,
            power=50.0,
        )

    def close(self) -> None:
        pass


def open_gpus() -> Gpus | None:
    """The GPUs of this machine: the fake when ``LABRUN_FAKE_GPUS`` is set, else NVML's;
    None where there are none (no driver, or no device)."""
    fake = os.environ.get(FAKE_GPUS)
    if fake:
        return FakeNvml(int(fake)) if int(fake) > 0 else None
    import pynvml

    try:
        gpus = NvmlGpus()
    except pynvml.NVMLError:
        return None
    if not gpus.devices():
        gpus.close()
        return None
    return gpus


def owned_indices(gpus: Gpus | None) -> list[int]:
    """The GPU indices this worker may hand out: ``LABRUN_WORKER_GPUS`` or all of them."""
    if gpus is None:
        return []
    pinned = os.environ.get(WORKER_GPUS)
    if pinned:
        return [int(i) for i in pinned.split(",") if i.strip()]
    return [d.index for d in gpus.devices()]
