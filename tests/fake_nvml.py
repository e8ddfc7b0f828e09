"""A stand-in for the `pynvml` module (nvidia-ml-py), for unit tests of NVML discovery.

The boundary: the real NVML is a C library shipped with the NVIDIA driver and answers only on a
node with NVIDIA GPUs and a loaded driver, absent on the machines these tests run on (`pynvml`
imports, but `nvmlInit()` fails with "NVML Shared Library Not Found"). This fake answers the
calls MLRP makes, with the types nvidia-ml-py 12 returns (str, int, an object with `.total`
bytes), so everything above NVML is tested for real: inventory, minor numbers and device rules,
`mlrp doctor`'s rows, the embedded default config. What it cannot show is how a real driver
numbers its devices; that is checked only on a GPU node.

Use::

    fake = fake_pynvml([FakeGPU("GPU-a", minor=4), FakeGPU("GPU-b", minor=None)])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    ...
    assert fake.lifecycle == ["init", "shutdown"]  # NVML was shut down again

Besides the NVML functions, the module carries for tests:

* ``calls``: the name of every NVML function called, in order (failed calls included);
* ``lifecycle``: ``"init"`` for each successful ``nvmlInit`` and ``"shutdown"`` for each
  ``nvmlShutdown``, so a test can assert that every init was matched by a shutdown;
* ``fail_on``: ``{function name: error text}``; a listed function raises ``NVMLError(text)``
  (e.g. ``fake.fail_on["nvmlDeviceGetName"] = "GPU is lost"`` for a GPU failing mid-read).

As in the real library, every call but ``nvmlInit`` raises ``NVMLError("Uninitialized")``
outside an init/shutdown pair, and a handle is an opaque object, not the GPU's index.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass

MIB = 1024 * 1024


class NVMLError(Exception):
    """What every failing fake NVML call raises; str() is NVML's text, e.g. "Not Supported"."""


@dataclass(frozen=True)
class FakeGPU:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    memory_mib: int = 81559
    minor: int | None = 0  # None: nvmlDeviceGetMinorNumber raises NVMLError ("Not Supported")


@dataclass(frozen=True)
class _Handle:
    """Opaque, like NVML's device handle: code that passes an index instead fails loudly."""

    index: int


@dataclass(frozen=True)
class _Memory:
    total: int
    free: int
    used: int


class _FakePynvml(types.ModuleType):
    """The module object; its methods are the NVML functions (bound, so called as functions)."""

    NVMLError = NVMLError

    def __init__(
        self, gpus: Sequence[FakeGPU], driver: str, cuda: int, init_error: str | None
    ) -> None:
        super().__init__("pynvml", "A fake pynvml for tests (tests/fake_nvml.py).")
        self.gpus = tuple(gpus)
        self.driver = driver
        self.cuda = cuda
        self.init_error = init_error
        self.calls: list[str] = []
        self.lifecycle: list[str] = []
        self.fail_on: dict[str, str] = {}
        self._inits = 0  # NVML counts inits; each needs its own shutdown

    def _enter(self, name: str, *, needs_init: bool = True) -> None:
        self.calls.append(name)
        if name in self.fail_on:
            raise NVMLError(self.fail_on[name])
        if needs_init and self._inits == 0:
            raise NVMLError("Uninitialized")

    def _gpu(self, handle: object) -> FakeGPU:
        if not isinstance(handle, _Handle):
            raise TypeError(f"not an NVML device handle: {handle!r}")
        return self.gpus[handle.index]

    def nvmlInit(self) -> None:
        self._enter("nvmlInit", needs_init=False)
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self._inits += 1
        self.lifecycle.append("init")

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self._inits -= 1
        self.lifecycle.append("shutdown")

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion_v2")
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise NVMLError("Invalid Argument")
        return _Handle(index)

    def nvmlDeviceGetUUID(self, handle: object) -> str:
        self._enter("nvmlDeviceGetUUID")
        return self._gpu(handle).uuid

    def nvmlDeviceGetName(self, handle: object) -> str:
        self._enter("nvmlDeviceGetName")
        return self._gpu(handle).name

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> _Memory:
        self._enter("nvmlDeviceGetMemoryInfo")
        total = self._gpu(handle).memory_mib * MIB
        return _Memory(total=total, free=total, used=0)

    def nvmlDeviceGetMinorNumber(self, handle: object) -> int:
        self._enter("nvmlDeviceGetMinorNumber")
        minor = self._gpu(handle).minor
        if minor is None:
            raise NVMLError("Not Supported")
        return minor


def fake_pynvml(
    gpus: Sequence[FakeGPU],
    *,
    driver: str = "550.54.15",
    cuda: int = 12040,
    init_error: str | None = None,
) -> types.ModuleType:
    """A stand-in for the `pynvml` module (nvidia-ml-py) reporting `gpus` in this order, with
    driver `driver` and CUDA `cuda` (NVML's encoding: 12040 is 12.4). `init_error` makes
    nvmlInit raise NVMLError with that text (a node whose driver is missing or broken).
    Install with monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([...]))."""
    return _FakePynvml(gpus, driver, cuda, init_error)
