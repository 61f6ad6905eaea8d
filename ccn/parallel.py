"""Data-parallel training across processes and machines: MPI through mpi4py.

``mpiexec -n N ccn train ...`` (or any MPI launcher: ``mpirun``, ``srun`` with PMI), or N
processes started with ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` (torchrun, a
shell loop, a job script; see "Launchers" below), runs N ranks of synchronous data-parallel
SGD. What each step does, on every rank:

* the Trainer walks the same global minibatches of M = ``--mini`` cases on every rank (the
  providers are deterministic in (seed, batch, epoch)). Rank r takes the contiguous rows
  ``[r*n//N, (r+1)*n//N)`` of the n cases of each minibatch (n = M except for a batch's short
  last minibatch; a rank may get no rows then, and contributes zeros), and it reads, decodes
  and augments only those rows (:func:`minibatch_shares`; ``Provider.load_rows``, which draws
  every random number of the batch and keeps the rows' own, so the data equal the whole
  batch's rows; a provider without ``load_rows`` is loaded whole and cut). So N ranks do 1/N
  of the data work each and hold 1/N of each batch in memory;
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

Testing is split like training: each rank tests its contiguous share of every test batch's
cases (reading only those when the provider has ``load_rows``; in a multiview test the same
cases of every view), and one all-reduce adds the cost sums, so the printed test costs equal
the single process's up to float rounding. Rank 0 prints and writes the checkpoints; the others are
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
(MPICH's and Open MPI's ``mpiexec`` end the job and name the pid), or, in a world built by the
rendezvous, by its liveness link closing (below): the job stops at once naming it.

Launchers: the MPI world is detected from the variables MPI launchers set (``PMI_SIZE``
for MPICH/Intel MPI/Slurm, ``OMPI_COMM_WORLD_SIZE`` for Open MPI, ...), so a single
process never initialises MPI. Without them, ``WORLD_SIZE`` > 1 with ``RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` (what torchrun and friends set) builds the same world,
still all MPI (:func:`init_world`):

1. the process re-executes itself as ``mpiexec -n 1 <the same command>`` (MPICH's mpiexec
   from PyPI, next to the Python or on PATH; ``CCN_MPIEXEC`` overrides). MPICH cannot connect
   singleton processes (MPI_Init with no launcher at all: they all claim the same process id,
   mpich issue 7805), but it connects separate one-process jobs; the pid stays the same, so
   the launcher's signals still reach the rank. Open MPI connects neither (singletons fail
   with MPI_ERR_INTERN, separate ``mpiexec -n 1`` jobs hung; Open MPI 5.0.8), so under an
   mpi4py on Open MPI this is refused, naming it: start such ranks with ``mpiexec`` instead;
2. rank 0 opens an MPI port (``MPI_Open_port``) and listens on TCP at ``MASTER_PORT`` (under
   torchrun, whose agent already listens there, ``MASTER_PORT`` + 1; ``CCN_RDZV_PORT``
   overrides); every other rank connects to ``MASTER_ADDR`` there (retrying until rank 0 is
   up) and says its rank, world size, host and pid. Once all have come, rank 0 gives the port
   name to rank 1, 2, ... in turn: the newcomer ``MPI_Comm_connect``s, the ranks already in
   ``MPI_Comm_accept``, and ``MPI_Intercomm_merge`` puts the newcomer last, so MPI ranks equal
   ``RANK``. Only those hellos and the port name travel over TCP; gradients go through MPI;
3. a rank that does not come within ``CCN_DP_TIMEOUT`` seconds is named (``rank 1 of
   WORLD_SIZE=3 did not reach the rendezvous at ...``) by rank 0 and by every rank waiting,
   all of which exit with code 1; a rank with no rank 0 to find says so. The TCP connections
   stay open as liveness links: when one closes (its process died), the other side stops the
   job at once, naming the rank, pid and host.

``LOCAL_RANK`` selects nothing on the CPU; it is kept as ``World.gpu_index`` (the entry of a
``--gpu`` list this rank will use once CUDA training exists; without ``LOCAL_RANK`` the rank
among the ranks on its machine).
"""

from __future__ import annotations

import os
import signal
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


def _under_mpi_launcher() -> bool:
    """Whether an MPI launcher (of any size, one rank included) started this process."""
    return any(os.environ.get(v, "").strip().isdigit() for v in _MPI_SIZE_VARS)


def _import_mpi(what: str):
    try:
        import mpi4py

        mpi4py.rc.thread_level = "multiple"
        from mpi4py import MPI
    except ImportError as e:
        raise ConfigError(f"{what}, but mpi4py is not installed ({e}); install it with: pip install mpi4py mpich "
                          "(or, in a ccn checkout, pip install '.[mpi]').") from e
    return MPI


def init_world(may_reexec: bool = True) -> "World | None":
    """The data-parallel world, or None for a single process.

    * started by an MPI launcher with more than one rank: ``MPI_COMM_WORLD``;
    * ``WORLD_SIZE`` > 1 and ``RANK`` set (torchrun, a shell loop) without an MPI launcher:
      the process re-executes itself under ``mpiexec -n 1`` (see :func:`launcher_vars`), then
      the ranks meet at ``MASTER_ADDR``:``MASTER_PORT`` (:func:`rendezvous`); only for the
      ``ccn`` command itself (``may_reexec``), never for a caller in the same process;
    * otherwise None."""
    size = launcher_world_size()
    if size > 1:
        MPI = _import_mpi(f"this process was started by an MPI launcher with {size} ranks")
        return World(MPI, _timeout())
    lv = launcher_vars()
    if lv is None:
        return None
    timeout = _timeout()
    if not _under_mpi_launcher():
        if not may_reexec:
            raise ConfigError(f"WORLD_SIZE={lv.world_size} is set: data-parallel training from RANK/WORLD_SIZE runs "
                              "only as the ccn command (ccn train ...), which restarts itself under mpiexec -n 1. "
                              "Unset WORLD_SIZE to train in this process.")
        _reexec_under_mpiexec(lv)  # does not return
    MPI = _import_mpi(f"WORLD_SIZE={lv.world_size} asks for data-parallel training")
    comm, links = rendezvous(MPI, lv, timeout)
    return World(MPI, timeout, comm=comm, links=links, launcher=lv)


# ---- RANK / WORLD_SIZE launchers (torchrun, a shell loop, a job script) -------------------------
class LauncherVars:
    """What a torchrun-style launcher said: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``; ``port`` is where rank 0 listens for the rendezvous."""

    def __init__(self, rank: int, world_size: int, local_rank: "int | None", addr: str, port: int, port_from: str):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.addr, self.port, self.port_from = addr, port, port_from


def _env_int(name: str, lo: int, hi: "int | None" = None) -> "int | None":
    v = os.environ.get(name)
    if v is None or v.strip() == "":
        return None
    v = v.strip()
    if not v.lstrip("-").isdigit() or int(v) < lo or (hi is not None and int(v) > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{name} must be a whole number {rng}, got '{v}'.")
    return int(v)


def launcher_vars() -> "LauncherVars | None":
    """``RANK``/``WORLD_SIZE``/... when ``WORLD_SIZE`` > 1, else None. The rendezvous port is
    ``MASTER_PORT``, except under torchrun, whose agent already listens there
    (``TORCHELASTIC_USE_AGENT_STORE``): then ``MASTER_PORT`` + 1. ``CCN_RDZV_PORT`` overrides both."""
    ws = _env_int("WORLD_SIZE", 1)
    if ws is None or ws <= 1:
        return None
    rank = _env_int("RANK", 0, ws - 1)
    if rank is None:
        raise ConfigError(f"WORLD_SIZE={ws} is set but RANK is not; a launcher sets both (RANK = 0..{ws - 1}). "
                          "Unset WORLD_SIZE to train in one process.")
    local = _env_int("LOCAL_RANK", 0)
    addr = os.environ.get("MASTER_ADDR", "").strip()
    mport = _env_int("MASTER_PORT", 1, 65535)
    if not addr or mport is None:
        raise ConfigError(f"WORLD_SIZE={ws} and RANK={rank} are set, but "
                          f"{'MASTER_ADDR' if not addr else 'MASTER_PORT'} is not: every rank needs MASTER_ADDR (the "
                          "host of rank 0) and MASTER_PORT (a free TCP port there) to find the others.")
    port, port_from = mport, f"MASTER_PORT={mport}"
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").strip().lower() in ("1", "true"):
        port, port_from = mport + 1, f"MASTER_PORT+1={mport + 1} (torchrun's agent listens on MASTER_PORT)"
    rp = _env_int("CCN_RDZV_PORT", 1, 65535)
    if rp is not None:
        port, port_from = rp, f"CCN_RDZV_PORT={rp}"
    if port > 65535:
        raise ConfigError(f"MASTER_PORT={mport}: the rendezvous port {port_from} is not a TCP port; set "
                          "CCN_RDZV_PORT to a free port on rank 0's host.")
    return LauncherVars(rank, ws, local, addr, port, port_from)


def find_mpiexec() -> "str | None":
    """``CCN_MPIEXEC``, else the ``mpiexec`` next to this Python (pip's mpich puts it there), else on PATH."""
    import shutil

    exe = os.environ.get("CCN_MPIEXEC")
    if exe:
        return exe
    return shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


def _reexec_under_mpiexec(lv: LauncherVars) -> None:
    """Become ``mpiexec -n 1 <this command>`` (same pid, so the launcher's signals still reach us).

    MPICH cannot connect singleton processes (MPI_Init without a launcher: they all claim the
    same process id; mpich issue 7805), so each rank runs as a one-process MPI job of its own and
    the ranks join with MPI_Comm_connect/accept."""
    if os.environ.get("CCN_RDZV_EXEC"):
        raise ConfigError(f"ccn restarted itself under {os.environ['CCN_RDZV_EXEC']} -n 1 for the RANK/WORLD_SIZE "
                          "rendezvous, but the restarted process sees no MPI launcher (no PMI_SIZE); that mpiexec is "
                          "not MPICH's. Point CCN_MPIEXEC at MPICH's mpiexec (pip install mpich).")
    head = sys.orig_argv[1:5]
    if not any(a == "ccn" or a.startswith("ccn.") or os.path.basename(a) in ("ccn", "ccn.exe") for a in head):
        raise ConfigError(f"WORLD_SIZE={lv.world_size} is set, but this process ({' '.join(sys.orig_argv[:4])} ...) "
                          "is not the ccn command, so it cannot restart itself under mpiexec -n 1 for the "
                          "RANK/WORLD_SIZE rendezvous. Start ccn train directly, or unset WORLD_SIZE.")
    try:  # which MPI, without initialising it here (the restarted process does)
        import mpi4py

        if "mpi4py.MPI" not in sys.modules:
            mpi4py.rc.initialize = False
        from mpi4py import MPI
    except ImportError as e:
        raise ConfigError(f"WORLD_SIZE={lv.world_size} asks for data-parallel training, but mpi4py is not installed "
                          f"({e}); install it with: pip install mpi4py mpich (or, in a ccn checkout, pip install "
                          "'.[mpi]').") from e
    lib = MPI.Get_library_version()
    if "MPICH" not in lib:
        # Open MPI connects neither singletons (Accept/Connect fail with MPI_ERR_INTERN) nor separate
        # mpiexec -n 1 jobs (they hung, tried with Open MPI 5.0.8) without a server of its own. Its
        # version string ends in a NUL byte and its first line goes on with build details: name the
        # MPI and its version only
        name = (lib.replace("\0", "").strip().splitlines() or ["another MPI"])[0].split(",")[0].strip()
        raise ConfigError(f"WORLD_SIZE={lv.world_size} without an MPI launcher needs MPICH (pip install mpich); this "
                          f"mpi4py uses {name}. Start the ranks with mpiexec -n N ccn train ... instead.")
    exe = find_mpiexec()
    if exe is None:
        raise ConfigError(f"WORLD_SIZE={lv.world_size} is set without an MPI launcher: ccn runs each rank under "
                          "MPICH's mpiexec -n 1, but no mpiexec is next to this Python or on PATH (pip install "
                          "mpich, or set CCN_MPIEXEC).")
    argv = [exe, "-launcher", "fork", "-n", "1", sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    env = {**os.environ, "CCN_RDZV_EXEC": exe}
    try:
        os.execve(exe, argv, env)
    except OSError as e:
        raise ConfigError(f"cannot run {exe} for the RANK/WORLD_SIZE rendezvous: {e.strerror}.") from None


def _send_line(sock, obj) -> None:
    import json

    sock.sendall((json.dumps(obj) + "\n").encode())


def _recv_line(sock, deadline: float) -> "dict | None":
    """One JSON line, or None at EOF; socket.timeout past ``deadline``."""
    import json

    buf = b""
    while not buf.endswith(b"\n"):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        if not chunk:
            return None
        buf += chunk
    return json.loads(buf.decode())


def _rdzv_error(msg: str, config: bool = False):
    """A failed rendezvous: at run time (exit 1), or ranks started with clashing RANK or
    WORLD_SIZE (a configuration error, exit 2)."""
    return (ConfigError if config else CcnRuntimeError)(f"data-parallel rendezvous failed: {msg}")


def rendezvous(MPI, lv: LauncherVars, timeout: float):
    """Build the world of ``lv.world_size`` one-process MPI jobs; returns (comm, links).

    Rank 0 opens an MPI port (``MPI_Open_port``) and listens on TCP at ``lv.port``; every
    other rank connects there and says who it is. Once all have come (within ``timeout``
    seconds; otherwise every rank fails naming the missing ones), rank 0 hands the port name
    to rank 1, 2, ... in turn; each connects (``MPI_Comm_connect``) while the ranks already in
    the group accept (``MPI_Comm_accept``), and the intercommunicator is merged with the
    newcomer last, so MPI ranks equal ``RANK``. Only the port name and these hellos travel over
    TCP; the TCP connections stay open as liveness links (a rank whose link closes has died)."""
    import socket as so

    deadline = time.monotonic() + timeout
    me = {"v": 1, "rank": lv.rank, "world_size": lv.world_size, "host": so.gethostname(), "pid": os.getpid()}
    where = f"{lv.addr}:{lv.port} ({lv.port_from})"
    if lv.rank == 0:
        port_name = MPI.Open_port()
        srv = so.socket(so.AF_INET, so.SOCK_STREAM)
        srv.setsockopt(so.SOL_SOCKET, so.SO_REUSEADDR, 1)
        try:
            srv.bind(("", lv.port))
        except OSError as e:
            srv.close()
            raise _rdzv_error(f"rank 0 cannot listen on port {lv.port} ({lv.port_from}): {e.strerror}. Choose a free "
                              "port (MASTER_PORT, or CCN_RDZV_PORT on every rank).") from None
        srv.listen(max(16, lv.world_size))
        links: dict[int, "so.socket"] = {}
        who: dict[int, dict] = {}

        def fail(msg, config=False):
            for s in links.values():
                try:
                    _send_line(s, {"error": msg, "config": config})
                    s.close()
                except OSError:
                    pass
            srv.close()
            raise _rdzv_error(msg, config)

        while len(links) < lv.world_size - 1:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [r for r in range(1, lv.world_size) if r not in links]
                fail(f"rank{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of WORLD_SIZE="
                     f"{lv.world_size} did not reach the rendezvous at {where} within {timeout:g} s. Start every rank "
                     "(RANK=0..WORLD_SIZE-1) with the same MASTER_ADDR/MASTER_PORT, or raise CCN_DP_TIMEOUT.")
            srv.settimeout(min(left, 1.0))
            try:
                conn, peer = srv.accept()
            except so.timeout:
                continue
            try:
                hello = _recv_line(conn, min(deadline, time.monotonic() + 10))
            except (OSError, ValueError):
                hello = None
            if not isinstance(hello, dict) or hello.get("v") != 1:
                conn.close()  # not one of ours (a port scanner, a stale client)
                continue
            r, ws = hello.get("rank"), hello.get("world_size")
            bad = None
            if ws != lv.world_size:
                bad = (f"rank {r} (pid {hello.get('pid')} on {hello.get('host')}) has WORLD_SIZE={ws}, rank 0 has "
                       f"{lv.world_size}; every rank needs the same WORLD_SIZE.")
            elif r in links:
                first = who[r]
                bad = (f"two processes claim RANK={r} (pid {first.get('pid')} on {first.get('host')} and pid "
                       f"{hello.get('pid')} on {hello.get('host')}); each rank needs its own RANK in "
                       f"0..{lv.world_size - 1}.")
            elif not isinstance(r, int) or not 1 <= r < lv.world_size:
                bad = f"a process (pid {hello.get('pid')} on {hello.get('host')}) claims RANK={r}; rank 0 has RANK=0."
            if bad is not None:
                links[-1 - len(links)] = conn  # told too
                fail(bad, config=True)
            links[r], who[r] = conn, hello
        srv.close()
        return _grow(MPI, lv, port_name, links, timeout), links
    # ---- ranks 1..N-1: find rank 0 (it may start later), say who we are, wait for our turn
    link = None
    while link is None:
        try:
            link = so.create_connection((lv.addr, lv.port), timeout=max(0.1, min(2.0, deadline - time.monotonic())))
        except OSError as e:
            if time.monotonic() >= deadline:
                raise _rdzv_error(f"rank {lv.rank} found no rank 0 listening at {where} within {timeout:g} s (last "
                                  f"error: {e.strerror or e}). Start RANK=0 with the same MASTER_ADDR/MASTER_PORT, or "
                                  "raise CCN_DP_TIMEOUT.") from None
            time.sleep(0.1)
    link.setsockopt(so.IPPROTO_TCP, so.TCP_NODELAY, 1)
    _send_line(link, me)
    try:  # rank 0 answers once every rank has come, or tells why not; give it a moment past our deadline
        msg = _recv_line(link, deadline + 5.0)
    except (OSError, ValueError):
        msg = None
        if time.monotonic() < deadline + 5.0:
            raise _rdzv_error(f"rank 0 at {where} broke the rendezvous connection.") from None
    if msg is None and time.monotonic() >= deadline:
        raise _rdzv_error(f"rank {lv.rank} waited {timeout:g} s at {where} for the other ranks; rank 0 did not answer.")
    if msg is None:
        raise _rdzv_error(f"rank 0 at {where} closed the rendezvous connection (it stopped: see its message).")
    if "error" in msg:
        raise _rdzv_error(msg["error"], bool(msg.get("config")))
    return _grow(MPI, lv, msg["port"], {0: link}, timeout), {0: link}


def _grow(MPI, lv: LauncherVars, port_name: str, links: dict, timeout: float):
    """The connect/accept rounds of :func:`rendezvous` (rank 0 sends each newcomer its turn);
    a watchdog ends this process if they do not finish within ``timeout`` or a link closes."""
    import select

    done = threading.Event()
    deadline = time.monotonic() + timeout

    def watch():
        socks = {s: r for r, s in links.items()}
        while not done.wait(0.1):
            gone = []
            try:
                readable, _, _ = select.select(list(socks), [], [], 0)
            except (OSError, ValueError):
                readable = []
            for s in readable:
                try:
                    if s.recv(1, so_peek_flag) == b"":
                        gone.append(socks[s])
                except OSError:
                    gone.append(socks[s])
            if gone and not done.is_set():
                g = min(gone)
                _rdzv_exit(f"rank {g} exited during the rendezvous (its connection to rank {lv.rank} closed).")
            if time.monotonic() > deadline and not done.is_set():
                _rdzv_exit(f"the ranks did not finish joining within {timeout:g} s (CCN_DP_TIMEOUT); "
                           f"rank {lv.rank} stops.")

    import socket as so

    so_peek_flag = so.MSG_PEEK
    t = threading.Thread(target=watch, name="ccn-rdzv-watch", daemon=True)
    t.start()
    try:
        return _join(MPI, lv, port_name, links)
    except MPI.Exception as e:
        why = e.Get_error_string().splitlines()[0]
        raise _rdzv_error(f"rank {lv.rank}: MPI could not connect the ranks ({why}).") from None
    finally:
        done.set()
        t.join(timeout=1)


def _join(MPI, lv: LauncherVars, port_name: str, links: dict):
    """Rank 0 hands the port name to rank 1, 2, ... in turn; the newcomer connects, the ranks
    already in accept, and the merge puts the newcomer last (MPI rank = RANK)."""
    if lv.rank == 0:
        comm = MPI.COMM_SELF.Dup()
    else:
        inter = MPI.COMM_SELF.Connect(port_name, root=0)
        comm = inter.Merge(high=True)
        inter.Free()
    for k in range(lv.rank + 1, lv.world_size):
        if lv.rank == 0:
            _send_line(links[k], {"port": port_name})
        inter = comm.Accept(port_name if lv.rank == 0 else None, root=0)
        new = inter.Merge(high=False)
        inter.Free()
        comm.Free()
        comm = new
    if comm.Get_rank() != lv.rank or comm.Get_size() != lv.world_size:  # cannot happen; say so if it does
        raise _rdzv_error(f"the joined group has rank {comm.Get_rank()} of {comm.Get_size()}, expected "
                          f"{lv.rank} of {lv.world_size}.")
    if lv.rank == 0:
        MPI.Close_port(port_name)
    return comm


def _rdzv_exit(msg: str) -> None:
    sys.stderr.write(f"error: data-parallel rendezvous failed: {msg}\n")
    sys.stderr.flush()
    os._exit(1)


class World:
    """The ranks of one data-parallel run and the collectives between them, with deadlines."""

    def __init__(self, MPI, timeout: float, comm=None, links: "dict | None" = None,
                 launcher: "LauncherVars | None" = None):
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.timeout = timeout
        self.launcher = launcher  # RANK/WORLD_SIZE rendezvous, or None under an MPI launcher
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        # the entry of a --gpu list this rank will use: LOCAL_RANK when a launcher gave one, else
        # the rank among the ranks on this machine (nothing selects a device on the CPU)
        self.gpu_index = launcher.local_rank if launcher is not None and launcher.local_rank is not None \
            else self.local_rank
        self.where = self.comm.allgather((socket.gethostname(), os.getpid()))
        # rendezvous TCP links (rank 0 <-> every rank): one that closes means that process is gone
        self._links = {s: r for r, s in (links or {}).items()}
        self._closing = False
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

    def _check_links(self) -> None:
        """A rendezvous link that closed: that rank's process is gone (killed, crashed) and the
        job cannot go on; say which and stop at once rather than at the next deadline."""
        if not self._links or self._closing:
            return
        import select

        try:
            readable, _, _ = select.select(list(self._links), [], [], 0)
        except (OSError, ValueError):
            return
        for s in readable:
            try:
                alive = s.recv(1, socket.MSG_PEEK) != b""
            except OSError:
                alive = False
            if not alive and not self._closing:
                r = self._links.pop(s)
                self._die(f"data-parallel training stopped at step {self.seq + 1}: {self.describe(r)} exited (its "
                          f"rendezvous connection to rank {self.rank} closed). The job is stopped.")

    def _watch(self) -> None:
        next_beat = 0.0
        while not self._stopped:
            time.sleep(0.1)
            self._check_links()
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
        # MPI_Abort may wait on a peer that is gone: make sure this process ends regardless
        threading.Timer(10.0, os._exit, (code,)).start()
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

    def check_same(self, items: dict) -> None:
        """Every rank must have been started alike: ``items`` maps a name (an option, "the layer
        file", ...) to what this rank has (small, comparable values or digests). Every rank gets
        every rank's items and raises the same ConfigError naming the first difference, before
        anything whose size depends on them is exchanged (a different --mini or net would
        otherwise end in an MPI error, or worse, train on silently)."""
        got: list = []
        self._collective("the start (options of every rank)", lambda: got.append(self.comm.allgather(items)))
        ranks = got[0]
        for name in items:
            for r, theirs in enumerate(ranks):
                if theirs.get(name) != ranks[0].get(name):
                    raise ConfigError(f"the ranks were started differently: {name} is {theirs.get(name)!r} on "
                                      f"{self.describe(r)} but {ranks[0].get(name)!r} on rank 0. Every rank of a "
                                      "data-parallel run needs the same options, layer files, data and checkpoint.")

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
        self._closing = True  # from here on a peer may finish and close its link first
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


def minibatch_shares(n: int, mini: int, size: int, rank: int):
    """Rank ``rank``'s rows of an ``n``-case data batch cut into minibatches of ``mini``:
    ``(rows, parts)`` with ``rows`` the increasing batch rows it needs (its :func:`split_rows`
    of every minibatch, in order) and ``parts[k] = (a, b, lo, hi)``: minibatch k's share is
    ``rows[a:b]``, rows ``lo:hi`` of that minibatch."""
    rows, parts, a = [], [], 0
    for start in range(0, max(n, 1), mini):
        m = min(n, start + mini) - start
        lo, hi = split_rows(m, size, rank)
        rows.extend(range(start + lo, start + hi))
        parts.append((a, a + hi - lo, lo, hi))
        a += hi - lo
    return np.asarray(rows, np.int64), parts


def test_share(data, size: int, rank: int, multiview: bool = False) -> list:
    """Rank ``rank``'s cases of a loaded test batch: its :func:`split_rows` of the cases, and in a
    multiview batch (``VIEWS`` blocks of n rows, one per view) the same cases of every view's block,
    so the views of a case stay on one rank."""
    if not isinstance(data, (list, tuple)) or not data or np.ndim(data[0]) == 0:
        return data  # run_test reports what is wrong with it
    from .testing import VIEWS

    rows = int(np.asarray(data[0]).shape[0])
    views = VIEWS if multiview and rows % VIEWS == 0 else 1
    n = rows // views
    lo, hi = split_rows(n, size, rank)
    return [np.concatenate([np.asarray(d)[v * n + lo:v * n + hi] for v in range(views)]) for d in data]


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
        self.stop_signal = None  # the signal that asked for it on this rank
        world.sync_params(net)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def forward(self, data, train: bool = False) -> None:
        self._inner._net.case_offset = 0
        self._inner.forward(data, train)

    def train_step(self, data, progress: float, minibatch: int, part=None) -> list[dict]:
        """One step on the global minibatch ``data`` (this rank takes its rows), or, with
        ``part = (n, lo, hi)``, on ``data`` = rows ``lo:hi`` of an ``n``-case minibatch (the
        Trainer loaded only those)."""
        core = self._inner._net
        w = self.world
        if part is None:
            n = int(np.asarray(data[0]).shape[0])
            lo, hi = split_rows(n, w.size, w.rank)
            data = [None if d is None else d[lo:hi] for d in data]
        else:
            n, lo, hi = part
        buf, g = self._buf, self._gsize
        if self._periodic:
            core.read_grads(self._pre)  # the global sum of earlier passes, the same on every rank
        costs = None
        if hi > lo:
            core.case_offset = lo
            core.fprop(self._inner._data(data), True)
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
        # a stop request: 1 for Ctrl-C, 1000 for SIGTERM, summed over the ranks (so all stop, and all exit as
        # for SIGTERM when any rank got one)
        buf[k] = (1000.0 if self.stop_signal == signal.SIGTERM else 1.0) if self.stop_requested else 0.0
        w.allreduce_sum(buf, "the gradient all-reduce")
        core.write_grads(buf[:g])
        core.update(progress, minibatch)
        core.step += 1
        core.case_offset = 0
        if buf[k] > 0 and self.trainer is not None:
            self.trainer._stop = True
            if buf[k] >= 1000:
                self.trainer.stop_signal = signal.SIGTERM
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
            self.net.stop_signal = signum
            self._display.line(self._stop_message(signum, "all ranks finish this minibatch, then rank 0 saves a "
                                                          "checkpoint"))

        def _stop_asked(self) -> bool:
            return self._stop or self.net.stop_requested

        def _load(self, dp, batch, epoch, key):
            if key[0] != "test":
                return super()._load(dp, batch, epoch, key)
            # this rank's cases of the test batch: read, decoded and cropped alone when it can be
            fn = getattr(dp, "load_rows", None)
            if fn is not None and not self.cfg.multiview:
                lo, hi = split_rows(int(dp.num_cases(batch)), world.size, world.rank)
                return fn(batch, epoch, np.arange(lo, hi))
            return test_share(dp.load(batch, epoch), world.size, world.rank, self.cfg.multiview)

        def _test_sums(self, batches, epoch):
            # every rank tests its share of each test batch's cases; one all-reduce adds the sums
            from .train import _CostSum

            mine = super()._test_sums(batches, epoch)
            layout = dpnet._cost_layout
            buf = np.zeros(sum(m for _, m in layout) + 1, np.float64)
            k = 0
            for layer, m in layout:
                vals = mine.values.get(layer, [])[:m]
                buf[k:k + len(vals)] = vals
                k += m
            buf[k] = mine.cases
            world.allreduce_sum(buf, "the test all-reduce")
            total, k = _CostSum(), 0
            for layer, m in layout:
                total.values[layer] = [float(v) for v in buf[k:k + m]]
                k += m
            total.cases = int(round(buf[k]))
            return total

        def save(self) -> str:
            if world.rank == 0:
                return super().save()
            name = self._name() or ck.checkpoint_name(0, 0)
            self._last_saved = name
            self.last_checkpoint = os.path.join(self.cfg.save_path, name)
            return self.last_checkpoint

    dpnet = DataParallelNet(net, world)
    trainer = DataParallelTrainer(dpnet, train_dp, test_dp, cfg, state=state, out=out)
    trainer.share = (world.rank, world.size)  # each rank loads only its rows of each minibatch
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
