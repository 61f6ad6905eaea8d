"""cuda-convnet2's multi-GPU layouts (``gpu=`` in the layer file), read as logical devices.

``gpu=0,1`` on a layer replicates it over those devices, each taking part of the minibatch
(data parallelism); layers on different single devices split the model (model
parallelism); a net with both is the "one weird trick" hybrid (Krizhevsky 2014: data
parallel convolutions, model parallel fully-connected layers). A layer without ``gpu=``
inherits the devices of its first input; a layer fed only by data layers defaults to
device 0. Indices are logical: they refer to the ``--gpu`` list of the command line.

What ccn does with a layout today: on the CPU every logical device runs in the one
process, which computes exactly what the layout computes (replicas over parts of the
minibatch sum their gradients to the full-minibatch gradient; model-parallel pieces are
the same arithmetic wherever they run), so ``ccn train`` accepts these files on the CPU and
says that the layout is simulated. Real scale-out is data parallelism over MPI ranks
(:mod:`ccn.parallel`); mapping logical devices onto several GPUs is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Layout:
    devices: dict[str, tuple[int, ...]]            # layer -> its logical devices (data layers left out)
    replicated: list[str] = field(default_factory=list)   # layers on several devices (data parallel)
    by_device: dict[int, list[str]] = field(default_factory=dict)  # single-device layers per device

    @property
    def num_devices(self) -> int:
        return 1 + max((d for devs in self.devices.values() for d in devs), default=0)

    @property
    def kind(self) -> str:
        single = [d for d, ls in self.by_device.items() if ls]
        model = len(single) > 1
        if self.replicated and single:  # e.g. replicated convolutions feeding fc layers on one device
            return "hybrid (data parallel + model parallel)"
        if self.replicated:
            return "data parallel"
        if model:
            return "model parallel"
        return "one device"

    def describe(self) -> str:
        parts = []
        if self.replicated:
            devs = sorted({devs for name, devs in self.devices.items() if name in self.replicated})
            parts.append(f"{len(self.replicated)} layers replicated on " +
                         " / ".join(",".join(map(str, d)) for d in devs))
        for d in sorted(self.by_device):
            if self.by_device[d] and (len(self.by_device) > 1 or self.replicated):
                parts.append(f"{len(self.by_device[d])} on device {d}")
        return f"{self.kind} over {self.num_devices} logical devices" + (f" ({'; '.join(parts)})" if parts else "")


def layout_of(net) -> Layout:
    """The layout of a built :class:`ccn.Net` from the ``gpu=`` keys of its layer-definition text."""
    from ._native import core

    given: dict[str, tuple[int, ...]] = {}
    for name, _line, entries in core.parse_config(net.layers_text, net.layers_path or "layers"):
        for key, value, _ in entries:
            if key == "gpu":
                given[name] = tuple(int(v) for v in value.split(","))
    devices: dict[str, tuple[int, ...]] = {}
    data = set()
    for layer in net.layers:  # forward order: inputs come first
        if layer.type == "data":
            data.add(layer.name)
            continue
        if layer.name in given:
            devices[layer.name] = given[layer.name]
        else:
            first = next((i for i in layer.inputs if i not in data), None)
            devices[layer.name] = devices[first] if first is not None else (0,)
    lay = Layout(devices=devices)
    for name, devs in devices.items():
        if len(devs) > 1:
            lay.replicated.append(name)
        else:
            lay.by_device.setdefault(devs[0], []).append(name)
    return lay
