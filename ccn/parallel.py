"""Data-parallel training across processes and machines: MPI through mpi4py.

``mpiexec -n N ccn train ...`` (or any MPI launcher: ``mpirun``, ``srun`` with PMI) runs N
ranks of synchronous data-parallel SGD. What each step does, on every rank:

* the Trainer hands every rank the same global minibatch of M = ``--mini`` cases (every
  rank loads the whole data batch; the providers are deterministic in (seed, batch, epoch),
  so all ranks hold identical data). Rank r takes the contiguous rows
  ``[r*n//N, (r+1)*n//N)`` of the n cases of the minibatch (n = M except for a batch's short
  last minibatch; a rank may get no rows then, and contributes zeros);
* forward and backward on those rows; the per-case random numbers (dropout masks) are
  indexed by the case's row in the *global* minibatch (``Net.case_offset`` = the rank's
  first row), so the ranks draw exactly the masks one process at minibatch M draws;
* one ``MPI_Allreduce`` (sum) per step over one flat float32 buffer holding every
  parameter's gradient (``_core.Net.read_grads``/``write_grads``), the cost values summed
  over the rank's cases, and a stop flag (Ctrl-C on any rank stops all ranks after the same
  minibatch);
* the SGD update on every rank with the summed gradient divided by the nominal global
  minibatch M (SPEC: ``inc = mom*inc + (eps/numCases)*sum grad - wc*eps*W``), so every rank
  keeps identical weights and the run follows the single-process trajectory at minibatch M
  up to float rounding (the sum of N partial sums is rounded differently from one sum; it is
  not bitwise equal). With ``updatePeriod`` > 1 the gradient accumulated by earlier passes is
  already global and identical on all ranks; only the new pass's contribution is summed.

Testing runs on every rank over the whole test batch (identical results, no communication;
this keeps the ranks in step). Rank 0 prints and writes the checkpoints; the others are
quiet except for errors, which name their rank. A checkpoint records the world size; resuming
with another world size is allowed and continues the same run (the state holds nothing per
rank), and says so.

Failure handling: a watchdog thread on every rank gives each collective a deadline
(``CCN_DP_TIMEOUT`` seconds, default 600, which must exceed the longest gap between ranks:
e.g. rank 0 writing a checkpoint while the others wait). Before each all-reduce every rank
tells rank 0 (and rank 0 tells every rank) which step it has reached, with small
non-blocking messages; when a deadline passes, rank 0 names the ranks that never reached
that step, prints it, and aborts the job (``MPI_Abort``); the other ranks give rank 0 a few
seconds to do so, then abort themselves. A rank that raises an error prints it (with its
rank) and aborts the job at once. A rank killed outright is also caught by the launcher
(MPICH's ``mpiexec`` ends the job and names the pid).

Launchers: the MPI world is detected from the variables MPI launchers set (``PMI_SIZE``
for MPICH/Intel MPI/Slurm, ``OMPI_COMM_WORLD_SIZE`` for Open MPI, ...), so a single
process never initialises MPI. ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` without an MPI launcher
(torchrun-style rendezvous) is refused with a message: ccn's transport is MPI.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

import numpy as np

from .errors import CcnRuntimeError, ConfigError

_MPI_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
TAG_ARRIVE = 7701
TAG_BEAT = 7702
BEAT_S = 0.5     # heartbeat interval of the watchdog threads
STALE_S = 2.0    # no heartbeat for this long: the rank is frozen or gone
DEFAULT_TIMEOUT = 600.0


def launcher_world_size() -> int:
    """The world size an MPI launcher announced in the environment (1 without one)."""
    for var in _MPI_SIZE_VARS:
        v = os.environ.get(var)
        if v and v.strip().isdigit():
            return int(v)
    return 1


def _timeout() -> float:
    v = os.environ.get("CCN_DP_TIMEOUT")
    if not v:
        return DEFAULT_TIMEOUT
    try:
        t = float(v)
        if t <= 0:
            raise ValueError
        return t
    except ValueError:
        raise ConfigError(f"CCN_DP_TIMEOUT must be a positive number of seconds, got '{v}'.") from None


def init_world() -> "World | None":
    """The MPI world when started by an MPI launcher with more than one rank, else None."""
    size = launcher_world_size()
    if size <= 1:
        ws = os.environ.get("WORLD_SIZE")
        if ws and ws.strip().isdigit() and int(ws) > 1:
            raise ConfigError(f"WORLD_SIZE={ws} is set, but this process was not started by an MPI launcher. ccn's "
                              "data-parallel training runs over MPI: start it with mpiexec -n N ccn train ... (or "
                              "srun with PMI); rendezvous through RANK/WORLD_SIZE/MASTER_ADDR alone (torchrun) is not "
                              "supported. Unset WORLD_SIZE to train in one process.")
        return None
    try:
        import mpi4py

        mpi4py.rc.thread_level = "multiple"
        from mpi4py import MPI
    except ImportError as e:
        raise ConfigError(f"this process was started by an MPI launcher with {size} ranks, but mpi4py is not "
                          f"installed ({e}); install it with: pip install mpi4py mpich (or, in a ccn checkout, pip install '.[mpi]').") \
            from e
    return World(MPI, _timeout())


class World:
    """The ranks of one data-parallel run and the collectives between them, with deadlines."""

    def __init__(self, MPI, timeout: float):
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.timeout = timeout
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self.where = self.comm.allgather((socket.gethostname(), os.getpid()))
        self.seq = 0  # collectives done
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._what = ""
        # arrival notes: rank 0 <- every rank, every rank <- rank 0
        self._peers = [r for r in range(self.size) if r != self.rank] if self.rank == 0 else [0]
        self._arrived = {r: 0 for r in self._peers}
        self._rbuf = {r: np.zeros(1, np.int64) for r in self._peers}
        self._rreq = {r: self.comm.Irecv(self._rbuf[r], source=r, tag=TAG_ARRIVE) for r in self._peers}
        self._sends: list = []
        # heartbeats from the watchdog threads, same directions: a rank frozen inside a collective
        self._hbuf = {r: np.zeros(1, np.int64) for r in self._peers}
        self._hreq = {r: self.comm.Irecv(self._hbuf[r], source=r, tag=TAG_BEAT) for r in self._peers}
        self._last_beat = {r: time.monotonic() for r in self._peers}
        self._beat_sends: list = []
        self._stopped = False
        self._thread = threading.Thread(target=self._watch, name="ccn-dp-watchdog", daemon=True)
        self._thread.start()

    # -- who is where
    def describe(self, r: int) -> str:
        host, pid = self.where[r]
        return f"rank {r} (pid {pid} on {host})"

    # -- arrival notes
    def _poll_arrivals(self) -> None:
        for r in self._peers:
            while self._rreq[r].Test():
                self._arrived[r] = max(self._arrived[r], int(self._rbuf[r][0]))
                self._rreq[r] = self.comm.Irecv(self._rbuf[r], source=r, tag=TAG_ARRIVE)

    def _announce(self, seq: int) -> None:
        self._sends = [s for s in self._sends if not s[0].Test()]
        for r in self._peers:
            buf = np.array([seq], np.int64)
            self._sends.append((self.comm.Isend(buf, dest=r, tag=TAG_ARRIVE), buf))
        self._poll_arrivals()

    # -- the watchdog
    def _beat(self) -> None:
        if self._stopped:
            return
        self._beat_sends = [b for b in self._beat_sends if not b[0].Test()]
        for r in self._peers:
            buf = np.array([1], np.int64)
            self._beat_sends.append((self.comm.Isend(buf, dest=r, tag=TAG_BEAT), buf))
        now = time.monotonic()
        for r in self._peers:
            while self._hreq[r].Test():
                self._last_beat[r] = now
                self._hreq[r] = self.comm.Irecv(self._hbuf[r], source=r, tag=TAG_BEAT)

    def _culprits(self, seq: int, what: str) -> list[str]:
        """The peers to blame: frozen ones (no heartbeat), else those that never reached ``seq``."""
        now = time.monotonic()
        frozen = [r for r in self._peers if now - self._last_beat[r] > STALE_S]
        if frozen:
            return [f"{self.describe(r)} stopped responding (no heartbeat for {now - self._last_beat[r]:.0f} s) "
                    f"during {what}" for r in frozen]
        self._poll_arrivals()
        return [f"{self.describe(r)} did not reach {what}" for r in self._peers if self._arrived[r] < seq]

    def _watch(self) -> None:
        next_beat = 0.0
        while not self._stopped:
            time.sleep(0.1)
            if time.monotonic() >= next_beat:
                self._beat()
                next_beat = time.monotonic() + BEAT_S
            with self._lock:
                deadline, what, seq = self._deadline, self._what, self.seq + 1
            if deadline is None or time.monotonic() < deadline:
                continue
            t = f"{self.timeout:g}"
            hint = ("It died or hangs; the job is stopped. If steps (or rank 0's checkpoint writing) can take that "
                    "long, raise the limit with CCN_DP_TIMEOUT=SECONDS.")
            culprits: list[str] = []
            t_end = time.monotonic() + 2 * STALE_S  # a rank frozen just now shows up a moment later
            while not culprits and time.monotonic() < t_end:
                with self._lock:  # the collective may have finished meanwhile
                    if self._deadline is None:
                        break
                culprits = self._culprits(seq, what)
                if not culprits:
                    time.sleep(BEAT_S)
                    self._beat()
            with self._lock:
                if self._deadline is None:
                    continue
            if self.rank == 0 or culprits:  # on other ranks the only peer is rank 0
                names = "; ".join(culprits) or f"every rank reached {what} but it did not finish"
                self._die(f"data-parallel training stopped at step {seq} after {t} s: {names}. {hint}")
            else:  # rank 0 is alive and waiting too: it names the culprit; give it time to do so
                time.sleep(min(10.0, self.timeout))
                self._die(f"data-parallel training stopped: {self.describe(self.rank)} waited more than {t} s for "
                          f"{what} (step {seq}); rank 0 names the rank(s) at fault. {hint}")

    def _die(self, msg: str, code: int = 1) -> None:
        try:
            sys.stderr.write(f"error: {msg}\n")
            sys.stderr.flush()
            time.sleep(1.0)  # let the launcher forward the message before the abort tears the job down
        finally:
            os.environ["CCN_DP_ABORTED"] = "1"
            self.comm.Abort(code)

    def abort_on_error(self, err: BaseException, code: int) -> None:
        """Print ``err`` (naming this rank) and stop every rank."""
        who = "" if self.rank == 0 else f"{self.describe(self.rank)}: "
        self._die(f"{who}{err}", code)

    # -- collectives
    def _collective(self, what: str, fn) -> None:
        seq = self.seq + 1
        self._announce(seq)
        with self._lock:
            self._what = what
            self._deadline = time.monotonic() + self.timeout
        try:
            fn()
        finally:
            with self._lock:
                self._deadline = None
                self.seq = seq

    def allreduce_sum(self, buf: np.ndarray, what: str) -> None:
        """In-place sum of ``buf`` over all ranks, within the deadline."""
        self._collective(what, lambda: self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM))

    def sync_params(self, net) -> None:
        """Give every rank rank 0's weights, increments and accumulated gradients (they are
        equal already when all ranks built the net from the same seed or checkpoint; this makes
        sure, e.g. with an initWFunc that draws its own random numbers)."""
        for p in net.params:
            for which in ("w", "inc", "grad"):
                a = np.ascontiguousarray(net.get(p.name, which), dtype=np.float32)
                self._collective("the start (weights from rank 0)", lambda: self.comm.Bcast(a, root=0))
                if self.rank != 0:
                    net.set(p.name, a, which)

    def close(self) -> None:
        """Cancel the pending notes so MPI can finalise (all ranks have finished together)."""
        if self._stopped:
            return
        self._collective("the end of training", self.comm.Barrier)
        self._stopped = True
        for s, _ in self._sends:
            s.Wait()
        self._poll_arrivals()
        self._thread.join(timeout=5)
        for s, _ in self._beat_sends:
            s.Wait()
        self.comm.Barrier()  # every rank's heartbeats are sent before the receives are cancelled
        for reqs in (self._rreq, self._hreq):
            for r in self._peers:
                reqs[r].Cancel()
                try:
                    reqs[r].Wait()
                except Exception:
                    pass


def split_rows(n: int, size: int, rank: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous rows of an ``n``-case minibatch: ``[rank*n//size, (rank+1)*n//size)``."""
    return rank * n // size, (rank + 1) * n // size


class DataParallelNet:
    """A :class:`ccn.Net` whose ``train_step`` is one synchronous data-parallel step over ``world``.

    Everything else (forward for testing, parameters, costs, ...) is the wrapped net's, on
    this rank. The Trainer drives it unchanged."""

    def __init__(self, net, world: World, trainer=None):
        self._inner = net
        self.world = world
        self.trainer = trainer
        self._gsize = int(net._net.grad_size)
        self._periodic = any(p.update_period > 1 for p in net.params)
        self._cost_layout = [(c["layer"], len(c["names"])) for c in net._net.costs()]
        ncost = sum(k for _, k in self._cost_layout)
        self._buf = np.zeros(self._gsize + ncost + 1, np.float32)
        self._pre = np.zeros(self._gsize, np.float32) if self._periodic else None
        self.stop_requested = False
        world.sync_params(net)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def forward(self, data, train: bool = False) -> None:
        self._inner._net.case_offset = 0
        self._inner.forward(data, train)

    def train_step(self, data, progress: float, minibatch: int) -> list[dict]:
        core = self._inner._net
        w = self.world
        n = int(np.asarray(data[0]).shape[0])
        lo, hi = split_rows(n, w.size, w.rank)
        buf, g = self._buf, self._gsize
        if self._periodic:
            core.read_grads(self._pre)  # the global sum of earlier passes, the same on every rank
        costs = None
        if hi > lo:
            core.case_offset = lo
            core.fprop(self._inner._data([None if d is None else d[lo:hi] for d in data]), True)
            core.bprop({})
            costs = core.costs()
            core.read_grads(buf[:g])
            if self._periodic and w.rank != 0:
                buf[:g] -= self._pre
        else:  # a short last minibatch with fewer cases than ranks
            buf[:g] = self._pre if (self._periodic and w.rank == 0) else 0.0
        k = g
        by_layer = {c["layer"]: c["values"] for c in costs} if costs is not None else {}
        for layer, m in self._cost_layout:
            vals = by_layer.get(layer, [0.0] * m)
            buf[k:k + m] = vals[:m] if len(vals) >= m else list(vals) + [0.0] * (m - len(vals))
            k += m
        buf[k] = 1.0 if self.stop_requested else 0.0
        w.allreduce_sum(buf, "the gradient all-reduce")
        core.write_grads(buf[:g])
        core.update(progress, minibatch)
        core.step += 1
        core.case_offset = 0
        if buf[k] > 0 and self.trainer is not None:
            self.trainer._stop = True
        out, k = [], g
        for layer, m in self._cost_layout:
            out.append({"layer": layer, "values": [float(v) for v in buf[k:k + m]]})
            k += m
        return out


def data_parallel_trainer(world: World, net, train_dp, test_dp, cfg, state, out):
    """A :class:`ccn.train.Trainer` that runs ``net`` data-parallel over ``world``: rank 0
    writes the checkpoints (the others only keep track of their names), and Ctrl-C on any
    rank stops every rank after the same minibatch."""
    from . import checkpoint as ck
    from .train import Trainer

    class DataParallelTrainer(Trainer):
        def _on_sigint(self, signum, frame):
            if self.net.stop_requested:
                raise KeyboardInterrupt
            self.net.stop_requested = True  # sent with the next all-reduce; every rank stops after it
            self._display.line("interrupted: all ranks finish this minibatch, then rank 0 saves a checkpoint "
                               "(press Ctrl-C again to abort without saving).")

        def save(self) -> str:
            if world.rank == 0:
                return super().save()
            name = self._name() or ck.checkpoint_name(0, 0)
            self._last_saved = name
            self.last_checkpoint = os.path.join(self.cfg.save_path, name)
            return self.last_checkpoint

    dpnet = DataParallelNet(net, world)
    trainer = DataParallelTrainer(dpnet, train_dp, test_dp, cfg, state=state, out=out)
    dpnet.trainer = trainer
    return trainer


class _Quiet:
    """Standard output of ranks other than 0."""

    def write(self, s):
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return False


def run_guarded(world: "World | None", fn):
    """Run ``fn(world)``; on any rank's error print it (naming the rank) and stop every rank.

    Ranks other than 0 wait a moment first: an error that every rank hits (a bad option, a
    NaN cost) is then reported once, by rank 0, whose abort ends the others."""
    from .errors import CcnError

    if world is None:
        return fn(None)
    try:
        result = fn(world)
    except SystemExit as e:  # Ctrl-C: every rank stopped after the same minibatch
        world.close()
        raise e
    except BaseException as e:
        if world.rank != 0:
            time.sleep(2.0)
        if isinstance(e, CcnError):
            world.abort_on_error(e, e.exit_code)
        elif isinstance(e, KeyboardInterrupt):
            world.abort_on_error(CcnRuntimeError("interrupted."), 130)
        else:
            world.abort_on_error(CcnRuntimeError(f"internal error: {type(e).__name__}: {e}. This is a bug in ccn; "
                                                 "report it."), 1)
        raise
    world.close()
    return result
