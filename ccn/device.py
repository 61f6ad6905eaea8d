"""Where a command runs its net: the CPU or one GPU (``--device`` / ``--gpu`` of ``ccn train``
and ``ccn test``).

:func:`select` turns the options into a :class:`Placement` or refuses, in one paragraph,
what cannot work here: CUDA asked for on a build without the CUDA backend or on a machine
without a visible GPU, a GPU index that does not exist, several GPUs (``--gpu 0,1``), a
net whose ``gpu=`` layout needs several devices, and CUDA under data parallelism (MPI).
:func:`place` then moves the net (its parameters; the core keeps them on the GPU and pulls
them back whenever Python reads them, so checkpoints are the same on both backends).

What this build and machine offer comes from :func:`probe`, the one place that asks the core
(tests replace it, and :func:`place`, to run the CUDA code paths of the CLI on a CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import CcnRuntimeError, ConfigError, InputError


@dataclass(frozen=True)
class Placement:
    device: str = "cpu"     # "cpu" or "cuda"
    gpu: int | None = None  # the GPU index when device == "cuda"

    @property
    def label(self) -> str:
        return "cpu" if self.device == "cpu" else f"cuda:{self.gpu}"


@dataclass(frozen=True)
class Backends:
    cuda_compiled: bool
    gpus: tuple  # ({"index", "name", "memory_bytes", ...}, ...) of the visible GPUs
    cuda_status: str = ""  # the core's word on why no GPU is usable, when it has one


def probe() -> Backends:
    """What this build of ccn and this machine offer."""
    from ._native import core

    compiled = "cuda" in core.build_info().get("backends", [])
    gpus: tuple = ()
    status = ""
    if compiled:
        try:
            gpus = tuple(core.cuda_devices())
        except Exception as e:  # noqa: BLE001 - a broken driver reads as "no GPU", with its words
            status = str(e)
        if not gpus and not status:
            try:
                status = str(core.cuda_status())
            except Exception:  # noqa: BLE001
                status = ""
    return Backends(compiled, gpus, status)


def parse_gpus(text, option: str = "--gpu") -> list[int]:
    """``"0"`` -> [0]; ``"0,1"`` -> [0, 1]; anything else is an InputError."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part.isdigit():
            raise InputError(f"{option}: expected a GPU index such as 0 (or a list such as 0,1), got '{text}'.")
        out.append(int(part))
    if len(set(out)) != len(out):
        raise InputError(f"{option}: the GPU list '{text}' names a GPU twice.")
    return out


def select(device: str | None, gpu=None, *, command: str = "ccn train", gpus_needed: int = 1,
           data_parallel: bool = False, backends: Backends | None = None) -> Placement:
    """The placement for ``--device DEVICE --gpu GPU``, or a one-paragraph error.

    ``gpu`` alone implies ``--device cuda``; ``--device cuda`` alone means GPU 0.
    ``gpus_needed`` is the net's ``gpu=`` layout size; ``data_parallel`` says the run is one
    rank of an MPI job."""
    asked = "--device cuda"  # the option the user gave, for the messages
    if device is None and gpu not in (None, ""):  # --gpu alone
        device = "cuda"
        asked = f"--gpu {gpu}"
    device = (device or "cpu").lower()
    if device == "gpu":
        device = "cuda"
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device: expected cpu or cuda, got '{device}'.")
    if gpu not in (None, ""):
        if device == "cpu":
            raise ConfigError(f"--gpu {gpu} selects GPUs but --device is cpu; leave out one of them.")
        idx = parse_gpus(gpu)
        if len(idx) > 1:
            raise ConfigError(f"--gpu {gpu}: training or testing on several GPUs at once is not implemented yet; "
                              f"give one index (e.g. --gpu {idx[0]}). For several GPUs, data parallelism over MPI "
                              "ranks runs on the CPU for now.")
        index = idx[0]
    else:
        index = 0
    if device == "cpu":
        return Placement("cpu", None)
    if data_parallel:
        raise ConfigError(f"{command} {asked} under an MPI launcher (data parallelism) is not implemented "
                          "yet; run the ranks on the CPU (leave out --device and --gpu), or run one process on "
                          "one GPU.")
    if gpus_needed > 1:
        raise ConfigError(f"the net's gpu= layout spreads it over {gpus_needed} devices, and placing layers on "
                          f"several real GPUs is not implemented yet; leave out {asked} to run the layout "
                          "simulated on the CPU (it computes exactly the single-device result), or remove the gpu= "
                          "keys to train it on one GPU.")
    b = backends or probe()
    if not b.cuda_compiled:
        raise CcnRuntimeError(f"{command} {asked}: this ccn was built without the CUDA backend (no CUDA "
                              "compiler was found when it was built; `ccn info` lists the compiled backends). "
                              "Rebuild it with nvcc on the PATH (pip install . -Ccmake.define.CCN_CUDA=ON), or "
                              f"leave out {asked} to run on the CPU.")
    if not b.gpus:
        why = f" (the CUDA runtime says: {b.cuda_status})" if b.cuda_status else ""
        raise CcnRuntimeError(f"{command} {asked}: no CUDA GPU is visible on this machine{why}. Check "
                              f"nvidia-smi and CUDA_VISIBLE_DEVICES, or leave out {asked} to run on the CPU.")
    if index >= len(b.gpus):
        have = ", ".join(f"{g.get('index', i)} ({g.get('name', '?')})" for i, g in enumerate(b.gpus))
        raise InputError(f"--gpu {index}: there is no GPU {index} on this machine; the visible GPUs are {have}.")
    return Placement("cuda", index)


def place(net, placement: Placement):
    """Move ``net`` (a :class:`ccn.Net`) to ``placement``; returns the net."""
    if placement.device == "cuda":
        net.to("cuda", placement.gpu)
    else:
        net.to("cpu")
    return net


def describe(placement: Placement, backends: Backends | None = None) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3, 79.1 GiB)`` or ``cpu``, for the run's header."""
    if placement.device != "cuda":
        return "cpu"
    b = backends or probe()
    for i, g in enumerate(b.gpus):
        if int(g.get("index", i)) == placement.gpu:
            mem = g.get("memory_bytes")
            extra = f", {mem / 2**30:.1f} GiB" if mem else ""
            return f"{placement.label} ({g.get('name', 'GPU')}{extra})"
    return placement.label
