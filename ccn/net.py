"""ccn.Net: a net built from cuda-convnet layer files, with NumPy access to everything.

Layout of every array that crosses this API: activations are ``cases x (C*H*W)`` float32
(channels slowest, x fastest within a case); weights keep cuda-convnet's matrix shapes
(conv: ``filterSize^2*filterChannels x filters``, fc: ``inputs x outputs``).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import numpy as np

from ._native import core
from .errors import ConfigError, InputError
from .netfiles import read_text


# cost layers whose first input holds the labels, and what the labels are
LABEL_COSTS = {"cost.logreg": "one class number per case", "cost.crossent": "a one-hot row per case",
               "cost.bce": "0 or 1 per output", "cost.dce": "0 or 1 per output"}


@dataclass
class LayerInfo:
    name: str
    type: str
    inputs: list[str]
    shape: tuple[int, int, int]  # channels, rows, cols per case
    weights: list[str]
    biases: str | None
    flops_per_case: float
    neuron: str
    is_cost: bool
    data_idx: int
    keeps_pre: bool = False  # the net keeps a pre-activation copy (a neuron neither in place nor fused)
    device_keeps_pre: bool = False  # the same on a GPU, whose kernels fuse no neuron
    fused_logits: str | None = None  # a cost layer fused with its softmax: the layer making the logits
    # a softmax (before cost.logreg) or logistic (before cost.bce/dce) whose input gradient its
    # cost layer computes in one step: that cost layer (the layer's own output_grad reads 0)
    fused_into: str | None = None

    @property
    def outputs(self) -> int:
        c, h, w = self.shape
        return c * h * w


@dataclass
class ParamInfo:
    name: str
    layer: str
    shape: tuple[int, int]
    is_bias: bool
    init_std: float
    init_value: float
    init_func: str
    eps: str
    eps_base: float  # the schedule's base (0: frozen, never updated)
    mom: float
    wc: float
    wball: float
    update_period: int
    shared_by: int
    passes: int = 0
    extra: dict = field(default_factory=dict)


def _dims(data_dims) -> dict[int, tuple[int, int, int]]:
    """{dataIdx: (channels, rows, cols)} from ints or triples of positive whole numbers."""
    out = {}
    for k, v in (data_dims or {}).items():
        parts = (v,) if isinstance(v, (int, np.integer)) else tuple(v) if isinstance(v, (tuple, list)) else None
        if parts is None or len(parts) not in (1, 3) or not all(
                isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 1 for x in parts):
            raise InputError(f"data dims for dataIdx {k} must be a positive int or (channels, rows, cols) of positive "
                             f"ints, got {v!r}.")
        dims = tuple(int(x) for x in parts)
        out[int(k)] = dims + (1, 1) if len(dims) == 1 else dims
    return out


def _seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
        raise InputError(f"seed must be a whole number from 0 to 2^63 - 1, got {seed!r}.")
    return int(seed)


def _progress(progress) -> float:
    """The training progress a learning-rate schedule reads: a number in [0, 1]."""
    p = float(progress)
    if not 0.0 <= p <= 1.0:  # (NaN fails this too)
        raise InputError(f"progress must be a number from 0 to 1 (the share of training done), got {progress!r}.")
    return p


class _Serialized:
    """The core net with every call made under one lock: the core releases the GIL while it
    computes, and one net's buffers are not for two threads at once (two threads training one
    Net corrupted the heap). Different nets run in parallel."""

    __slots__ = ("_core", "_lock")

    def __init__(self, core_net):
        object.__setattr__(self, "_core", core_net)
        object.__setattr__(self, "_lock", threading.RLock())

    def __getattr__(self, name):
        attr = getattr(self._core, name)
        if not callable(attr):
            return attr
        lock = self._lock

        def call(*args, **kw):
            with lock:
                return attr(*args, **kw)
        return call

    def __setattr__(self, name, value):
        with self._lock:
            setattr(self._core, name, value)


class Net:
    """A net from a layer-definition file and (optionally) a layer-params file.

    ``data_dims`` maps each ``dataIdx`` to its per-case shape, e.g. ``{0: (3, 32, 32), 1: 1}``.
    Without a params file the learning hyper-parameters are zero (inspection only).
    ``device="cuda"`` runs the net on GPU ``gpu`` (see ``to()``); the default is the CPU.
    """

    def __init__(self, layers: str, params: str | None = None, data_dims=None, seed: int = 0,
                 layers_text: str | None = None, params_text: str | None = None, init: bool = True,
                 device: str = "cpu", gpu: int = 0, allow_unused: bool = False):
        seed = _seed(seed)
        if not isinstance(layers, str):
            raise InputError(f"layers must be the layer file's path (or a name for layers_text), got {layers!r}.")
        if layers_text is None:
            layers_text = read_text(layers, "layer-definition file")
        if params is not None and params_text is None:
            params_text = read_text(params, "layer-params file")
        if params is None and params_text is not None:  # a text without a file: give it a name to report
            params = "<params_text>"
        self.layers_path = layers
        self.params_path = params
        self.layers_text = layers_text
        self.params_text = params_text or ""
        self.data_dims = _dims(data_dims)
        # allow_unused: a layer that feeds nothing is accepted (a net read back from a checkpoint)
        self._net = _Serialized(core.Net(layers_text, layers, self.params_text, params or "", self.data_dims,
                                         allow_unused))
        self._net.seed = int(seed)
        self.seed = int(seed)
        if init:
            self.init_weights(seed)
        self.to(device, gpu)

    # ---- device ------------------------------------------------------------------------
    def to(self, device: str, gpu: int = 0) -> "Net":
        """Move the net (its parameters; activations follow) to "cpu" or "cuda" GPU ``gpu``.

        Parameters travel both ways unchanged, so a net trained on one backend continues on
        the other and checkpoints are the same. Raises CcnRuntimeError when the net has a
        layer without a CUDA implementation, or no GPU / cuBLAS is usable.
        """
        if device == "cpu":
            self._net.to_host()
        elif device in ("cuda", "gpu"):
            self._net.to_device(int(gpu))
        else:
            raise InputError(f"unknown device '{device}'; expected 'cpu' or 'cuda'.")
        return self

    @property
    def device(self) -> str:
        return f"cuda:{self._net.device}" if self._net.on_device else "cpu"

    def synchronize(self) -> None:
        """Wait until the GPU has finished this net's queued work (a no-op on the CPU).
        ``train_step`` returns once the costs are known; its backward pass and update may
        still be running then (timing code calls this)."""
        self._net.synchronize()

    def prefetch(self, data) -> None:
        """Start copying the next minibatch to the GPU; ``train_step(None, ...)`` or
        ``forward(None)`` then uses it (the copy overlaps the current step)."""
        self._net.prefetch(self._data(data))

    # ---- structure -------------------------------------------------------------------
    @property
    def layers(self) -> list[LayerInfo]:
        return [LayerInfo(**d) for d in self._net.layers()]

    def layer(self, name: str) -> LayerInfo:
        for info in self.layers:
            if info.name == name:
                return info
        raise InputError(f"no layer named '{name}'; layers: {', '.join(l.name for l in self.layers)}.")

    @property
    def params(self) -> list[ParamInfo]:
        return [ParamInfo(**d) for d in self._net.params()]

    @property
    def gpus_needed(self) -> int:
        return self._net.gpus_needed

    def cost_layers(self) -> list[str]:
        return [l.name for l in self.layers if l.is_cost]

    # ---- parameters ------------------------------------------------------------------
    def get(self, name: str, which: str = "w") -> np.ndarray:
        return self._net.get(name, which)

    def set(self, name: str, array, which: str = "w") -> None:
        self._net.set(name, np.ascontiguousarray(array, dtype=np.float32), which)

    def weights(self) -> dict[str, np.ndarray]:
        return {p.name: self.get(p.name) for p in self.params}

    def init_weights(self, seed: int = 0) -> None:
        """N(0, initW^2) weights and constant initB biases, or the user's initWFunc/initBFunc."""
        rng = np.random.default_rng(_seed(seed))
        for p in self.params:
            if p.init_func:
                arr = self._call_init_func(p)
            elif p.is_bias:
                arr = np.full(p.shape, p.init_value, dtype=np.float32)
            else:
                arr = (rng.standard_normal(p.shape) * p.init_std).astype(np.float32)
            self.set(p.name, arr)

    def _call_init_func(self, p: ParamInfo) -> np.ndarray:
        """The user's initWFunc (called as cuda-convnet2 did, ``f(layer, input_index, shape,
        params=[...])``) or initBFunc (``f(layer, shape, params=[...])``)."""
        from .plugins import import_user_module

        # (re.S: the arguments may go on over indented lines, as ConfigParser joins them)
        m = re.fullmatch(r"\s*([\w.]+)\.(\w+)\s*(?:\((.*)\))?\s*", p.init_func, re.S)
        key = "initBFunc" if p.is_bias else "initWFunc"
        where = f"{self.layers_path}: layer '{p.layer}', key '{key}'"
        if not m:
            found = p.init_func.replace("\n", "\\n")  # a continuation line's break, shown escaped (one paragraph)
            raise ConfigError(f"{where}: expected module.function(args), found '{found}'.")
        module, func, args = m.group(1), m.group(2), m.group(3)
        try:
            fn = getattr(import_user_module(module, self.layers_path), func)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"{where}: cannot load '{module}.{func}' ({e}).") from e
        except Exception as e:  # the module fails on import: the user's code, not ccn's
            raise ConfigError(f"{where}: importing module '{module}' failed: {type(e).__name__}: {e}. Rerun with "
                              "--debug for the traceback.") from e
        params = [a.strip() for a in args.split(",")] if args and args.strip() else []
        idx = int(re.search(r"\[(\d+)\]", p.name).group(1)) if "[" in p.name else 0
        try:
            arr = fn(p.layer, p.shape, params=params) if p.is_bias else fn(p.layer, idx, p.shape, params=params)
        except Exception as e:
            raise ConfigError(f"{where}: {module}.{func}{p.shape!r} raised {type(e).__name__}: {e}. Rerun with "
                              "--debug for the traceback.") from e
        try:
            with np.errstate(over="ignore"):  # (a value beyond float32 becomes inf: refused below)
                arr = np.asarray(arr, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: {module}.{func} returned {type(arr).__name__}, not an array of numbers "
                              f"({e}).") from None
        if arr.shape != tuple(p.shape):  # (as the original: a transposed or flat array is refused, not reread)
            raise ConfigError(f"{where}: {module}.{func} returned shape {arr.shape}, expected {tuple(p.shape)}.")
        if not np.isfinite(arr).all():
            raise ConfigError(f"{where}: {module}.{func} returned values that are not finite (NaN or infinite, e.g. "
                              "a float64 beyond float32's range).")
        return arr

    # ---- running ---------------------------------------------------------------------
    def _data(self, data) -> list:
        if data is None:  # the minibatch given to prefetch()
            return []
        if isinstance(data, dict):
            n = max(data) + 1 if data else 0
            return [np.ascontiguousarray(data[i], dtype=np.float32) if i in data else None for i in range(n)]
        return [None if d is None else np.ascontiguousarray(d, dtype=np.float32) for d in data]

    def forward(self, data, train: bool = False) -> None:
        self._net.fprop(self._data(data), train)

    def backward(self, seeds: dict | None = None) -> None:
        """Backward from the cost layers, or with ``seeds`` {layer name: cases x outputs gradient}
        from the given output gradients."""
        bad = [k for k in (seeds or {}) if not isinstance(k, str)]
        if bad:
            raise InputError(f"backward seeds map layer names to gradients; got the key {bad[0]!r}.")
        self._net.bprop({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in (seeds or {}).items()})

    def update(self, progress: float, minibatch: int) -> None:
        self._net.update(_progress(progress), minibatch)

    def skip_frozen(self, on: bool = True) -> None:
        """Leave out of the backward pass what only feeds frozen matrices (epsW/epsB 0, which
        update leaves untouched, as cuda-convnet did): their gradients then stay 0. Off by
        default, so that every gradient is there to read; ccn train (ccn.train.Trainer) turns
        it on for the net it trains."""
        self._net.set_skip_frozen(bool(on))

    def train_step(self, data, progress: float, minibatch: int) -> list[dict]:
        return self._net.train_step(self._data(data), _progress(progress), minibatch)

    def output(self, layer: str) -> np.ndarray:
        return self._net.output(layer)

    def output_grad(self, layer: str) -> np.ndarray:
        """dCost/d(output of ``layer``) of the last backward pass. For a layer fused with its cost
        (LayerInfo.fused_into names the cost: a softmax feeding only cost.logreg, a logistic
        feeding only cost.bce/dce) it is zeros: the gradient goes to the layer's input in one
        step (cuda-convnet's computeLogregSoftmaxGrad and NeuronLayer::bpropSpecial), so the
        layer's own is never formed; read its input's."""
        return self._net.output_grad(layer)

    def costs(self) -> list[dict]:
        return self._net.costs()

    def reload_params(self, params: str, params_text: str | None = None) -> None:
        text = params_text if params_text is not None else read_text(params, "layer-params file")
        # all or nothing: a throwaway net reads the text first (its parameters are untouched zero
        # pages, so it costs little), and only a text it accepts reaches this net, whose layers
        # would otherwise keep the settings read before a bad line
        core.Net(self.layers_text, self.layers_path, text, params, self.data_dims, True)
        self._net.reload_params(text, params)
        self.params_path, self.params_text = params, text


def memory_estimate(net: Net, cases: int, device: bool = False) -> int:
    """Bytes the core needs for a training step on ``cases`` cases: every layer's output and its
    gradient, a pre-activation copy where the net keeps one (a neuron neither applied in place nor
    fused into its layer; ``device``: as on a GPU, which fuses none), the parameters with their
    gradients and momentum increments. Scratch buffers (unfolded images) come on top, so this is
    a floor."""
    acts = sum(l.outputs for l in net.layers)
    pre = sum(l.outputs for l in net.layers if (l.device_keeps_pre if device else l.keeps_pre))
    params = sum(p.shape[0] * p.shape[1] for p in net.params)
    return 4 * (cases * (2 * acts + pre) + 3 * params)


# On a GPU the conv layers' unfolded images (native/cuda/conv.cu) need scratch on top of
# memory_estimate: chunks of cases within a budget of 256 MB unless CCN_UNFOLD_BYTES.
_GPU_SCRATCH_BYTES = 256 << 20


def _gpu_conv_scratch_floor(net: Net, cases: int) -> int:
    """The least scratch conv.cu takes for the largest conv layer, forward or backward: a chunk
    of Nc cases (conv_chunk_cases: as many as fit in the budget, at least 1, at most ``cases``)
    of the unfolded input (groups * K rows; K, a weight matrix's rows, is a floor of it) and the
    output or its gradient with filters outermost (F * MM per case). Local layers use none."""
    budget, most = core.unfold_budget_bytes(_GPU_SCRATCH_BYTES), 0
    params = {p.name: p for p in net.params}
    for l in net.layers:
        if l.type != "conv" or not l.weights:
            continue
        mm = l.shape[1] * l.shape[2]
        per_case = 4 * (max(params[w].shape[0] for w in l.weights) * mm + l.outputs)
        nc = max(1, min(cases, budget // per_case))
        most = max(most, per_case * nc)
    return most


def _gpu_free_bytes(gpu: int) -> int | None:
    info = core.cuda_mem_info(gpu)
    return None if info is None else int(info[0])


def _available_bytes() -> int | None:
    """Memory this process can still take: the kernel's MemAvailable, or less where a cgroup
    (a Slurm job, a container, Kubernetes) limits it."""
    have = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    have = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    room = _cgroup_room()
    if room is not None:
        have = room if have is None else min(have, room)
    return have


def _stat_value(path: str, key: str) -> int:
    """A value of a cgroup's memory.stat (0 when absent)."""
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(" ")
                if k == key:
                    return int(v)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_room(root: str = "/sys/fs/cgroup", proc: str = "/proc/self/cgroup") -> int | None:
    """The least (limit - usage) over this process's memory cgroup and its parents, v2
    (memory.max, memory.current) or v1 (memory.limit_in_bytes, memory.usage_in_bytes), usage
    less the inactive file cache (which the kernel drops before it kills anything); None
    when none sets a limit. A cgroup path missing under ``root`` (a namespaced mount) is looked
    for from the mount's top."""
    import os

    try:
        with open(proc) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    places = []  # (folder, limit file, usage file)
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrl, path = parts
        if ctrl == "" and os.path.isfile(os.path.join(root, "cgroup.controllers")):
            places.append((root, path, "memory.max", "memory.current", "inactive_file"))
        elif "memory" in ctrl.split(","):
            places.append((os.path.join(root, "memory"), path, "memory.limit_in_bytes", "memory.usage_in_bytes",
                           "total_inactive_file"))
    room = None
    for top, path, lim_name, use_name, cache_name in places:
        rel = path.strip("/")
        if rel and not os.path.isdir(os.path.join(top, rel)):
            rel = ""
        while True:
            folder = os.path.join(top, rel) if rel else top
            try:
                with open(os.path.join(folder, lim_name)) as f:
                    lim = f.read().strip()
                with open(os.path.join(folder, use_name)) as f:
                    use = int(f.read().strip())
                use -= _stat_value(os.path.join(folder, "memory.stat"), cache_name)  # file cache the kernel drops
                if lim != "max" and int(lim) < 2**60:
                    r = max(0, int(lim) - use)
                    room = r if room is None else min(room, r)
            except (OSError, ValueError):
                pass
            if not rel:
                break
            rel = os.path.dirname(rel)
    return room


def check_memory(net: Net, cases: int, what: str) -> None:
    """Refuse, with a message, a step that cannot fit in the memory available now: the kernel's
    out-of-memory killer would otherwise end the process without a word, and on a GPU the first
    allocation that fails would stop the run after its setup. On a GPU the parameters are
    already there, so only the rest must fit in its free memory."""
    if net.device != "cpu":
        gpu = int(net.device.split(":")[1])
        have = _gpu_free_bytes(gpu)
        # (a data layer's "output and gradient" in memory_estimate are the GPU's two staging slots)
        params = 4 * 3 * sum(p.shape[0] * p.shape[1] for p in net.params)
        need = memory_estimate(net, cases, device=True) - params + _gpu_conv_scratch_floor(net, cases)
        if have is not None and need > have:
            raise InputError(f"{what}: a step of {net.layers_path} on {cases} cases needs at least "
                             f"{need / 2**30:.1f} GiB more on GPU {gpu}, but only {have / 2**30:.1f} GiB of its memory "
                             "is free; use a smaller minibatch (--mini) or smaller images, or free the GPU.")
        return
    need, have = memory_estimate(net, cases), _available_bytes()
    if have is not None and need > have:
        raise InputError(f"{what}: a step of {net.layers_path} on {cases} cases needs at least "
                         f"{need / 2**30:.1f} GiB of memory, but only {have / 2**30:.1f} GiB is available; use a "
                         "smaller minibatch (--mini) or smaller images.")
