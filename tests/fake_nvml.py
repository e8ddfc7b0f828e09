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
  (e.g. ``fake.fail_on["nvmlDeviceGetName"] = "GPU is lost"`` for a GPU failing mid-read);
* ``hang_on``: ``{function name: threading.Event}``; a listed function blocks until the event
  is set (a driver that stops answering), then goes on as usual.

Each FakeGPU also says what it is doing: ``utilization`` (percent), ``memory_used_mib`` and
``processes`` (FakeProcess: pid, GPU memory, compute or graphics); ``None`` in utilization or
processes makes that NVML call answer "Not Supported", as some GPUs and MIG slices do.

A real hub (a separate process) gets the fake through :func:`install_for_hub`: a `pynvml.py`
shim on its PYTHONPATH that reads the GPUs from a JSON file at every ``nvmlInit``, so a test can
change what the GPUs do (e.g. put a server's PID on one) while the hub runs.

As in the real library, every call but ``nvmlInit`` raises ``NVMLError("Uninitialized")``
outside an init/shutdown pair, and a handle is an opaque object, not the GPU's index.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import types
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


class NVMLError(Exception):
    """What every failing fake NVML call raises; str() is NVML's text, e.g. "Not Supported"."""


@dataclass(frozen=True)
class FakeProcess:
    pid: int
    used_mib: int | None = 1024  # None: NVML_VALUE_NOT_AVAILABLE (pynvml gives None)
    graphics: bool = False  # listed by nvmlDeviceGetGraphicsRunningProcesses, not Compute


@dataclass(frozen=True)
class FakeGPU:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    memory_mib: int = 81559
    minor: int | None = 0  # None: nvmlDeviceGetMinorNumber raises NVMLError ("Not Supported")
    utilization: int | None = 0  # None: nvmlDeviceGetUtilizationRates is "Not Supported"
    memory_used_mib: int = 0
    processes: tuple[FakeProcess, ...] | None = ()  # None: both process lists "Not Supported"


@dataclass(frozen=True)
class _Utilization:
    gpu: int
    memory: int


@dataclass(frozen=True)
class _Process:
    """Like pynvml's friendly process object: pid, usedGpuMemory in bytes (or None)."""

    pid: int
    usedGpuMemory: int | None  # noqa: N815  (pynvml's name)


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
        self.hang_on: dict[str, threading.Event] = {}
        self._inits = 0  # NVML counts inits; each needs its own shutdown

    def _enter(self, name: str, *, needs_init: bool = True) -> None:
        self.calls.append(name)
        if name in self.hang_on:
            self.hang_on[name].wait()
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
        gpu = self._gpu(handle)
        total, used = gpu.memory_mib * MIB, gpu.memory_used_mib * MIB
        return _Memory(total=total, free=total - used, used=used)

    def nvmlDeviceGetUtilizationRates(self, handle: object) -> _Utilization:
        self._enter("nvmlDeviceGetUtilizationRates")
        gpu = self._gpu(handle)
        if gpu.utilization is None:
            raise NVMLError("Not Supported")
        return _Utilization(gpu=gpu.utilization, memory=0)

    def _processes(self, handle: object, graphics: bool) -> list[_Process]:
        processes = self._gpu(handle).processes
        if processes is None:
            raise NVMLError("Not Supported")
        return [
            _Process(p.pid, None if p.used_mib is None else p.used_mib * MIB)
            for p in processes
            if p.graphics == graphics
        ]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: object) -> list[_Process]:
        self._enter("nvmlDeviceGetComputeRunningProcesses")
        return self._processes(handle, graphics=False)

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: object) -> list[_Process]:
        self._enter("nvmlDeviceGetGraphicsRunningProcesses")
        return self._processes(handle, graphics=True)

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


# -- the fake in a real hub (another process) --------------------------------------------------
class _FileBackedPynvml(_FakePynvml):
    """The fake, re-reading its GPUs from a JSON file (write_gpus) at every nvmlInit."""

    def __init__(self, path: Path) -> None:
        super().__init__((), "550.54.15", 12040, None)
        self.path = path

    def nvmlInit(self) -> None:
        while hang_path(self.path).exists():  # a driver that stopped answering
            time.sleep(0.05)
        self.gpus = read_gpus(self.path)
        super().nvmlInit()


def hang_path(gpus_file: Path) -> Path:
    """While this file exists, the fake of install_for_hub hangs in nvmlInit."""
    return gpus_file.with_name(gpus_file.name + ".hang")


def write_gpus(path: Path, gpus: Sequence[FakeGPU]) -> None:
    """What the fake NVML of install_for_hub reports from its next nvmlInit on."""
    path.write_text(json.dumps([asdict(g) for g in gpus]))


def read_gpus(path: Path) -> tuple[FakeGPU, ...]:
    def gpu(d: dict[str, Any]) -> FakeGPU:
        procs = d.pop("processes")
        return FakeGPU(
            **d, processes=None if procs is None else tuple(FakeProcess(**p) for p in procs)
        )

    return tuple(gpu(d) for d in json.loads(path.read_text()))


def file_backed_pynvml(path: str) -> types.ModuleType:
    return _FileBackedPynvml(Path(path))


def install_for_hub(code_dir: Path, gpus_file: Path, gpus: Sequence[FakeGPU]) -> None:
    """Make `import pynvml` give the fake reading `gpus_file` to processes whose PYTHONPATH is
    `code_dir` (a harness.readable_copy of the code, never the checkout itself)."""
    write_gpus(gpus_file, gpus)
    shutil.copy(Path(__file__), code_dir / "fake_nvml.py")
    (code_dir / "pynvml.py").write_text(
        "# A fake NVML for tests (tests/fake_nvml.py): no GPU driver on this machine.\n"
        "import sys\n"
        "from fake_nvml import file_backed_pynvml\n"
        f"sys.modules[__name__] = file_backed_pynvml({str(gpus_file)!r})\n"
    )
