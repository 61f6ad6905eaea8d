"""The training loop of ``ccn train`` (cuda-convnet's ``convnet.py``), independent of the CLI.

:class:`Trainer` takes a built :class:`ccn.Net`, a train and a test data provider (any
object with the data-provider contract of ``ccn.data.provider``: ``batch_nums``,
``data_dims()``, ``num_cases(b)``, ``load(b, epoch)``) and a :class:`TrainConfig`.

What it does, as cuda-convnet did:

* epochs over the train batches; each data batch is cut into minibatches of ``mini``
  cases (a short last one still divides its gradient by the nominal ``mini``) and each
  minibatch is one ``Net.train_step``. The schedules' progress is
  ``(batches done - 1) / (epochs * batches per epoch)``, fixed within a data batch;
* after each data batch one line ``E.B (P%)... COST:  v1, v2 (T sec)``, the costs summed
  over the batch's cases and divided by their number;
* every ``test_freq`` batches a test (one test batch in turn with ``test_one``, all of them
  otherwise) printing the costs, their averages over the last tests, each weight matrix's
  mean |W|, mean |inc| and their ratio, then a checkpoint (see :mod:`ccn.checkpoint`);
* the next data batch is loaded in a background thread while the core computes (the core
  releases the GIL);
* on a GPU (``net.device`` is not ``"cpu"``) each minibatch goes to the net through
  ``net.prefetch`` and ``train_step(None, ...)``: minibatch k+1 is handed to ``prefetch`` as
  soon as step k is enqueued, so its copy (host -> pinned -> device, on the net's copy
  stream) overlaps step k's backward pass and update on the GPU;
* SIGINT (Ctrl-C), or SIGTERM, finishes the current minibatch, saves a checkpoint of that exact
  position and stops; a second Ctrl-C aborts at once (more SIGTERMs are ignored: schedulers may
  send one to the process group and one to the process);
* a non-finite cost stops training with :class:`ccn.errors.CcnRuntimeError` naming the first
  layer whose output went non-finite; nothing is saved, so the last checkpoint is the last
  good state.

Given the same build, thread count and checkpoint, resuming is bitwise exact: the state is
the weights, increments, accumulated gradients and their pass counts, the core's RNG
counter (``seed``, ``step``), and the provider position down to the minibatch.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import checkpoint as ck
from .batchrange import format_range
from .errors import CcnRuntimeError, InputError
from .testing import run_test


@dataclass
class TrainConfig:
    epochs: int = 50000
    mini: int = 128
    test_freq: int = 57
    test_one: bool = True
    save_path: str | None = None
    max_filesize_mb: float = 5000.0
    force_save: bool = False
    provider_seed: int = 0
    layers_file_sha256: str | None = None  # of the layer-definition file as first read (before any netedit rewrite)
    multiview: bool = False  # the test provider returns 10 views per case (see ccn.testing.run_test)
    options: dict = field(default_factory=dict)  # everything, as saved in checkpoints
    progress_bar: bool = False


@dataclass
class TrainState:
    """Where training stands: the next minibatch to run, and the history so far."""

    epoch: int = 1
    index: int = 0          # index into the train batches of the next data batch
    mb: int = 0             # minibatches of that batch already done
    batches_done: int = 0
    test_index: int = 0     # next test batch for test_one
    last: tuple[int, int] | None = None  # (epoch, batch) of the last completed data batch
    partial: dict | None = None          # sums of an interrupted batch: costs, cases, seconds
    train_outputs: list = field(default_factory=list)
    test_outputs: list = field(default_factory=list)
    train_range: list | None = None      # the train batches of the run it was saved by (resuming)

    def to_json(self, train_batches, provider_seed) -> dict:
        return {"epoch": self.epoch, "index": self.index, "mb": self.mb, "batches_done": self.batches_done,
                "test_index": self.test_index, "last": list(self.last) if self.last else None,
                "partial": self.partial, "train_range": list(train_batches), "seed": provider_seed}

    @classmethod
    def from_checkpoint(cls, ckpt: ck.Checkpoint) -> "TrainState":
        p = ckpt.position
        h = ckpt.meta.get("history", {})
        return cls(epoch=int(p["epoch"]), index=int(p["index"]), mb=int(p["mb"]),
                   batches_done=int(p["batches_done"]), test_index=int(p.get("test_index", 0)),
                   last=tuple(p["last"]) if p.get("last") else None, partial=p.get("partial"),
                   train_outputs=list(h.get("train", [])), test_outputs=list(h.get("test", [])),
                   train_range=[int(b) for b in p["train_range"]] if p.get("train_range") else None)


@dataclass
class TrainResult:
    state: TrainState
    checkpoint: str | None
    interrupted: bool


# ---- cost bookkeeping ----------------------------------------------------------------------
class _CostSum:
    """Cost values summed over cases, per cost layer, in the net's order."""

    def __init__(self, init: dict | None = None):
        self.values: dict[str, list[float]] = {k: list(v) for k, v in (init or {}).get("costs", {}).items()}
        self.cases = int((init or {}).get("cases", 0))

    def add(self, costs: list[dict], cases: int) -> None:
        for c in costs:
            vals = [float(v) for v in c["values"]]
            cur = self.values.get(c["layer"])
            self.values[c["layer"]] = vals if cur is None else [a + b for a, b in zip(cur, vals)]
        self.cases += cases

    def to_json(self) -> dict:
        return {"costs": self.values, "cases": self.cases}


def shown_values(ltype: str | None, values, cases: int) -> list[float]:
    """What cuda-convnet prints for one cost layer's summed values (its ``outputFilter``): each
    value divided by the number of cases, except for ``cost.dce``, whose per-class counts
    (declared positives, positives, true positives) become precision = true positives /
    declared positives and recall = true positives / positives (``inf`` when nothing was
    declared positive or no case is positive, as in the original)."""
    n = max(int(cases), 1)
    vals = [float(v) for v in values]
    if ltype != "cost.dce":
        return [v / n for v in vals]
    out = [v / n for v in vals[:2]]
    for k in range(2, len(vals) - 2, 3):
        declared, positive, truepos = vals[k:k + 3]
        out.append(truepos / declared if declared > 0 else math.inf)
        out.append(truepos / positive if positive > 0 else math.inf)
    return out


def shown_names(ltype: str | None, names) -> list[str]:
    """The names of :func:`shown_values` (``precision[k]``, ``recall[k]`` for cost.dce)."""
    names = list(names)
    if ltype != "cost.dce":
        return names
    out = names[:2]
    for j in range((len(names) - 2) // 3):
        out += [f"precision[{j}]", f"recall[{j}]"]
    return out


def format_costs(costs: dict[str, list[float]], cases: int, types: dict[str, str] | None = None,
                 label_names: list[str] | None = None) -> str:
    """cuda-convnet's ``name:  v1, v2`` with each summed value divided by the number of cases
    (``types`` maps layer names to their types). cost.dce as cuda-convnet2's
    outputFilterFormatter printed it: ``name:  (crossent) c, (err) e, (LABEL) precision, recall``
    per class, LABEL from ``label_names`` (the class index where there is none)."""
    types = types or {}
    names = list(label_names or [])

    def one(name, vals):
        shown = shown_values(types.get(name), vals, cases)
        if types.get(name) != "cost.dce":
            return ", ".join("%.6f" % v for v in shown)
        parts = ["(crossent) %.6f" % shown[0], "(err) %.6f" % shown[1]]
        for k in range((len(shown) - 2) // 2):
            label = names[k] if k < len(names) else str(k)
            parts.append("(%s) %.6f, %.6f" % (label, shown[2 + 2 * k], shown[3 + 2 * k]))
        return ", ".join(parts)

    return " ".join(f"{name}:  " + one(name, vals) for name, vals in costs.items())


def _nonfinite(costs: list[dict]) -> bool:
    return any(not math.isfinite(float(v)) for c in costs for v in c["values"])


# ---- display ------------------------------------------------------------------------------
class _Display:
    """Lines to stdout; on a terminal also a live rich progress bar underneath them."""

    def __init__(self, total_batches: float, done: float, epochs: int, enabled: bool, out=None, on_closed=None,
                 epoch: int = 1):
        self.out = out or sys.stdout
        self.on_closed = on_closed  # called once if the output turns out to be a closed pipe (`| head`)
        self.progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"), TextColumn("{task.fields[ips]:>8.0f} img/s"),
                TextColumn("data wait {task.fields[wait]:>4.1f}%"), TextColumn("ETA"), TimeRemainingColumn(),
                console=Console(file=self.out), transient=True, redirect_stdout=False, redirect_stderr=False)
            self.task = self.progress.add_task("train", total=total_batches, completed=done, epoch=epoch, epochs=epochs,
                                               ips=0.0, wait=0.0)
            self.progress.start()

    def line(self, text: str) -> None:
        try:
            if self.progress is not None:
                self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
            else:
                print(text, file=self.out, flush=True)
        except BrokenPipeError:
            self._closed()

    def _closed(self) -> None:
        """The reader of our output went away: write nothing more there, and say so once."""
        self.out = open(os.devnull, "w")
        if self.progress is not None:
            self.progress.console.file = self.out
            try:
                self.progress.stop()
            except OSError:
                pass
            self.progress = None
        if self.on_closed is not None:
            cb, self.on_closed = self.on_closed, None
            cb()

    def update(self, completed: float, epoch: int, ips: float, wait: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=completed, epoch=epoch, ips=ips, wait=wait)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


# ---- the loop -----------------------------------------------------------------------------
class Trainer:
    def __init__(self, net, train_dp, test_dp, cfg: TrainConfig, state: TrainState | None = None, out=None):
        if cfg.mini < 1:
            raise InputError(f"the minibatch size (--mini) must be at least 1, got {cfg.mini}.")
        if cfg.epochs < 1:
            raise InputError(f"the number of epochs (--epochs) must be at least 1, got {cfg.epochs}.")
        if cfg.test_freq < 1:
            raise InputError(f"the test frequency (--test-freq) must be at least 1 batch, got {cfg.test_freq}.")
        self.net, self.train_dp, self.test_dp, self.cfg = net, train_dp, test_dp, cfg
        if hasattr(net, "skip_frozen"):  # fine-tuning the top of a net skips the frozen bottom
            net.skip_frozen(True)
        self.train_batches = list(train_dp.batch_nums)
        self.test_batches = list(test_dp.batch_nums) if test_dp is not None else []
        if not self.train_batches:
            raise InputError("the train range holds no data batches.")
        self.state = state or TrainState()
        self.range_note: str | None = None  # what resuming on another train range did (printed by ccn train)
        old = self.state.train_range
        if old is not None and list(old) != self.train_batches:
            self._rebase(list(old))
        elif self.state.index >= len(self.train_batches):  # (no saved range) resumed with a shorter one
            self.state.epoch += 1
            self.state.index, self.state.mb, self.state.partial = 0, 0, None
        self.out = out
        self._cost_types = {l.name: l.type for l in net.layers if l.is_cost}
        self._label_names = None  # for cost.dce's lines, read when first needed (format_costs)
        self._stop = False
        self._repeat_said = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ccn-data")
        self._pending: dict = {}
        self._last_saved: str | None = None
        self.last_checkpoint: str | None = None
        self.wait_s = 0.0
        self.start_s = 0.0
        # data parallel: (rank, ranks) -- this process loads and steps only its rows of every
        # training minibatch (ccn.parallel.minibatch_shares); None: all of them
        self.share: tuple[int, int] | None = None
        # on a GPU: overlap the copy of minibatch k+1 with step k (prefetch + train_step(None))
        self.overlap_copy = str(getattr(net, "device", "cpu")) != "cpu"

    def _rebase(self, old: list[int]) -> None:
        """Resumed on another train range: go on with the batch that was to come next if the new
        range holds it, else after the last batch trained (as cuda-convnet2 went on after the saved
        batch), and count the batches done as cuda-convnet2 did (``get_num_batches_done``:
        len(range) * (epoch - 1) + position), so the learning-rate schedules' progress and the
        test frequency follow the new range instead of jumping (a shorter range showed 100%)."""
        st, new = self.state, self.train_batches
        pending = old[st.index] if st.index < len(old) else None  # the batch that was to come next
        if pending in new:  # it still comes next (an interrupted one is finished), where it now stands
            epoch, index = st.epoch, new.index(pending)
        else:
            st.mb, st.partial = 0, None
            last = st.last[1] if st.last else None
            if last in new:
                epoch, index = st.last[0], new.index(last) + 1
            else:  # start the new range, in this epoch if the old one had not begun it
                epoch, index = (st.epoch, 0) if st.index == 0 else (st.epoch + 1, 0)
            if index >= len(new):
                epoch, index = epoch + 1, 0
        before = st.batches_done
        st.epoch, st.index = epoch, index
        st.batches_done = len(new) * (epoch - 1) + index
        self.range_note = (f"the train range changed since the checkpoint ({format_range(old)} -> {format_range(new)}): "
                           f"going on with batch {new[index]} of epoch {epoch}; batches done counted in the new range: "
                           f"{st.batches_done} (was {before}), for the learning-rate schedules and --test-freq")

    # -- data
    def _load(self, dp, batch: int, epoch: int, key) -> list:
        if self.share is not None and key[0] == "train":
            return self._load_share(dp, batch, epoch)
        return dp.load(batch, epoch)

    def _load_share(self, dp, batch: int, epoch: int) -> list:
        """This rank's rows of every minibatch of a training batch, in order: read, decoded and
        augmented alone when the provider has ``load_rows``, else cut from the whole batch."""
        from .parallel import minibatch_shares

        rank, size = self.share
        n = int(dp.num_cases(batch))
        rows, _ = minibatch_shares(n, self.cfg.mini, size, rank)
        fn = getattr(dp, "load_rows", None)
        if fn is not None:
            return fn(batch, epoch, rows)
        full = dp.load(batch, epoch)
        if not isinstance(full, (list, tuple)) or not full:
            return full  # _get reports it
        got = np.asarray(full[0]).shape[0] if np.ndim(full[0]) else -1
        if got != n:
            raise InputError(f"the data provider's num_cases({batch}) is {n} but load({batch}) gave {got} cases; "
                             "data-parallel ranks need both to agree.")
        return [np.asarray(d)[rows] for d in full]

    def _prefetch(self, dp, batch: int, epoch: int, key) -> None:
        if key not in self._pending:
            self._pending[key] = self._pool.submit(self._load, dp, batch, epoch, key)

    def _get(self, dp, batch: int, epoch: int, key) -> list:
        t0 = time.perf_counter()
        fut = self._pending.pop(key, None)
        data = fut.result() if fut is not None else self._load(dp, batch, epoch, key)
        self.wait_s += time.perf_counter() - t0
        from .testing import as_matrices, check_rows

        out = as_matrices(data, batch, allow_empty=self.share is not None)
        if self.share is None and dp is self.train_dp:  # (test batches: run_test checks them, views and all)
            check_rows(dp, batch, out[0].shape[0])
        return out

    def _next_pos(self, epoch: int, index: int) -> tuple[int, int]:
        index += 1
        if index >= len(self.train_batches):
            return epoch + 1, 0
        return epoch, index

    # -- signals
    def _on_signal(self, signum, frame):
        # SIGTERM (what batch schedulers send before killing a job) stops as Ctrl-C does. Only a second
        # Ctrl-C aborts without saving: a scheduler may send TERM to the process group and to the process
        # itself (Slurm's scancel, a job's time limit), so a repeated SIGTERM must not cost the checkpoint
        if self._stop_asked():
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            if not self._repeat_said:
                self._repeat_said = True
                self._display.line(f"{signal.Signals(signum).name} again: still finishing this minibatch and saving "
                                   "(only a second Ctrl-C aborts without saving).")
            return
        self.stop_signal = signum
        self._on_sigint(signum, frame)

    def _stop_asked(self) -> bool:
        return self._stop

    @staticmethod
    def _stop_message(signum, what: str) -> str:
        """The line printed when a signal asks to stop, worded by the signal received."""
        if signum == signal.SIGINT:
            return f"interrupted: {what} (press Ctrl-C again to abort without saving)."
        name = signal.Signals(signum).name if signum else "a signal"
        return f"interrupted by {name}: {what} (more {name}s are ignored; a Ctrl-C aborts without saving)."

    def _on_output_closed(self):
        # `ccn train ... | head`: stop as Ctrl-C does (finish the minibatch, save), not with a traceback
        if not self._stop:
            self.stop_signal = signal.SIGPIPE
            self._stop = True
            print("warning: the output pipe was closed; finishing this minibatch, then saving a checkpoint.",
                  file=sys.stderr, flush=True)

    def _on_sigint(self, signum, frame):
        if self._stop:
            raise KeyboardInterrupt
        self._stop = True
        self._display.line(self._stop_message(signum, "finishing this minibatch, then saving a checkpoint"))

    # -- main
    def _labels(self) -> list[str]:
        """The class names cost.dce's lines show (ccn.testing.label_names of the training data)."""
        if self._label_names is None:
            self._label_names = []
            if "cost.dce" in self._cost_types.values():
                from .testing import label_names

                self._label_names = label_names(self.train_dp, 0)
        return self._label_names

    def run(self, stop_after: int | None = None) -> TrainResult:
        """Train to the end of ``epochs`` (or ``stop_after`` more batches, or Ctrl-C)."""
        cfg, st = self.cfg, self.state
        nb = len(self.train_batches)
        total = cfg.epochs * nb
        self._display = _Display(total, min(st.batches_done, total), cfg.epochs, cfg.progress_bar, self.out,
                                 on_closed=self._on_output_closed, epoch=min(st.epoch, cfg.epochs))  # (resumed: its epoch)
        old_handlers = {}
        self.stop_signal = None
        self._repeat_said = False
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, self._on_signal)
        self.start_s = time.perf_counter()
        self.wait_s = 0.0
        cases_done = 0
        batches_this_run = 0
        self._batches_at_start = st.batches_done
        try:
            while st.epoch <= cfg.epochs and not self._stop:
                if stop_after is not None and batches_this_run >= stop_after:
                    break
                epoch, index = st.epoch, st.index
                bnum = self.train_batches[index]
                try:
                    data = self._get(self.train_dp, bnum, epoch, ("train", epoch, index))
                except InputError as e:
                    raise self._save_before_data_error(e) from None
                ne, ni = self._next_pos(epoch, index)
                if ne <= cfg.epochs:
                    self._prefetch(self.train_dp, self.train_batches[ni], ne, ("train", ne, ni))
                progress = min(1.0, max(0.0, st.batches_done / total))
                if self.share is None:
                    n = data[0].shape[0]
                else:  # data holds this rank's rows of each minibatch, one after the other
                    from .parallel import minibatch_shares

                    n = int(self.train_dp.num_cases(bnum))
                    rows, parts = minibatch_shares(n, cfg.mini, self.share[1], self.share[0])
                    if data[0].shape[0] != len(rows):
                        raise InputError(f"the data provider's load_rows gave {data[0].shape[0]} cases for batch "
                                         f"{bnum}; {len(rows)} were asked for.")
                nmb = max(1, -(-n // cfg.mini))
                sums = _CostSum(st.partial if st.mb > 0 else None)
                t0 = time.perf_counter() - (st.partial or {}).get("seconds", 0.0) if st.mb > 0 else time.perf_counter()
                first_mb = st.mb  # (st.mb advances inside the loop)
                for k in range(first_mb, nmb):
                    lo, hi = k * cfg.mini, min(n, (k + 1) * cfg.mini)
                    if self.share is None and self.overlap_copy:
                        if k == first_mb:  # the first minibatch of this run of the batch: nothing to overlap
                            self.net.prefetch([d[lo:hi] for d in data])
                        costs = self.net.train_step(None, progress, cfg.mini)  # the prefetched one
                        if k + 1 < nmb:  # copied while the GPU runs this step's backward pass and update
                            self.net.prefetch([d[(k + 1) * cfg.mini:min(n, (k + 2) * cfg.mini)] for d in data])
                    elif self.share is None:
                        costs = self.net.train_step([d[lo:hi] for d in data], progress, cfg.mini)
                    else:
                        a, b, r_lo, r_hi = parts[k]
                        costs = self.net.train_step([d[a:b] for d in data], progress, cfg.mini,
                                                    part=(hi - lo, r_lo, r_hi))
                    if _nonfinite(costs):
                        self._nonfinite_error(costs, f"training batch {epoch}.{bnum}, minibatch {k + 1}")
                    sums.add(costs, hi - lo)
                    st.mb = k + 1
                    cases_done += hi - lo
                    elapsed = time.perf_counter() - self.start_s
                    self._display.update(st.batches_done + st.mb / nmb, epoch, cases_done / max(elapsed, 1e-9),
                                         100 * self.wait_s / max(elapsed, 1e-9))
                    if self._stop and st.mb < nmb:
                        st.partial = {**sums.to_json(), "seconds": time.perf_counter() - t0}
                        if not cfg.save_path:
                            return TrainResult(st, None, True)
                        path = self.save()
                        self._display.line(f"Saved checkpoint to {path}")
                        return TrainResult(st, path, True)
                # the batch is done
                st.mb, st.partial = 0, None
                st.batches_done += 1
                batches_this_run += 1
                st.last = (epoch, bnum)
                st.epoch, st.index = ne, ni
                st.train_outputs.append({"epoch": epoch, "batch": bnum, "costs": sums.values, "cases": sums.cases})
                costs_text = format_costs(sums.values, sums.cases, self._cost_types, self._labels())
                self._display.line(f"{epoch}.{bnum} ({100 * progress:.2f}%)... {costs_text} "
                                   f"({time.perf_counter() - t0:.3f} sec)")
                if st.batches_done % cfg.test_freq == 0:
                    if self.test_batches:
                        try:
                            self.test()
                        except InputError as e:
                            raise self._save_before_data_error(e) from None
                    if cfg.save_path:
                        path = self.save()
                        self._display.line("-------------------------------------------------------")
                        self._display.line(f"Saved checkpoint to {path}")
                        self._display.line("=======================================================")
            interrupted = self._stop
            if cfg.save_path and (cfg.force_save or interrupted):
                name = self._name()
                if name is not None and name != self._last_saved:
                    path = self.save()
                    self._display.line(f"Saved checkpoint to {path}")
            return TrainResult(st, self.last_checkpoint, interrupted)
        finally:
            self._display.close()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            for fut in self._pending.values():
                fut.cancel()
            self._pending.clear()
            self._pool.shutdown(wait=True)

    # -- testing
    def test(self) -> dict:
        """Test on one test batch in turn (test_one) or on all; print the costs and weight stats."""
        st = self.state
        if self.cfg.test_one:
            batches = [self.test_batches[st.test_index % len(self.test_batches)]]
            st.test_index = (st.test_index + 1) % len(self.test_batches)
        else:
            batches = list(self.test_batches)
        epoch = st.last[0] if st.last else st.epoch
        sums = self._test_sums(batches, epoch)
        rec = {"epoch": epoch, "batch": st.last[1] if st.last else 0, "test_batches": batches, "costs": sums.values,
               "cases": sums.cases}
        st.test_outputs.append(rec)
        show = self._display.line
        show("")
        show("======================Test output======================")
        show(format_costs(sums.values, sums.cases, self._cost_types, self._labels()))
        recent = st.test_outputs[-len(self.test_batches):]
        avg = _CostSum()
        for r in recent:
            avg.add([{"layer": k, "values": v} for k, v in r["costs"].items()], r["cases"])
        show("----------------------Averages-------------------------")
        show(format_costs(avg.values, avg.cases, self._cost_types, self._labels()))
        show("-------------------------------------------------------")
        for line in weight_stats(self.net):
            show(line)
        return rec

    def _test_sums(self, batches: list, epoch: int) -> "_CostSum":
        """The test costs summed over the cases of ``batches`` (as loaded by ``_load``)."""
        sums = _CostSum()
        nxt = iter(batches[1:])

        def load(b):  # through the prefetching loader, fetching the next test batch meanwhile
            data = self._get(self.test_dp, b, epoch, ("test", epoch, b))
            following = next(nxt, None)
            if following is not None:
                self._prefetch(self.test_dp, following, epoch, ("test", epoch, following))
            return data

        for mb in run_test(self.net, self.test_dp, batches, mini=self.cfg.mini, epoch=epoch,
                           allow_empty=self.share is not None,
                           multiview=self.cfg.multiview, load=load, on_nonfinite=self._nonfinite_error):
            sums.add(mb.costs, mb.cases)
        return sums

    def _nonfinite_error(self, costs, where: str):
        layer = self.net._net.first_nonfinite_layer()
        bad = ", ".join(f"{c['layer']} = {[float(v) for v in c['values']]}" for c in costs)
        first = f"the first layer whose output is not finite is '{layer}'" if layer else \
            "no layer output is non-finite, so the cost itself overflowed"
        keep = (f" The last good checkpoint, {self.last_checkpoint}, is kept; resume from it with lower learning "
                "rates (edit the layer-params file, then ccn train -f).") if self.last_checkpoint else \
            " No checkpoint was written in this run."
        raise CcnRuntimeError(f"the cost became NaN or infinite while {where} ({bad}); {first}.{keep}")

    def _save_before_data_error(self, e: InputError) -> InputError:
        """A batch found bad mid-run (damaged since prepare-data, or undecodable) ends the run, but
        the batches trained since the last checkpoint are saved first, as Ctrl-C would. Called
        where data is loaded, between batches, so the net stands at the end of a whole batch;
        under data parallel every rank's weights are then equal, and rank 0, which writes the
        checkpoints, saves them without any exchange (when it is the rank that met the error)."""
        name = self._name()
        if ((self.share is not None and self.share[0] != 0) or not self.cfg.save_path or self.state.mb > 0
                or name is None or name == self._last_saved or self.state.batches_done == self._batches_at_start):
            return e
        try:
            path = self.save()
        except Exception as save_error:  # the data error stays the one reported
            return InputError(f"{e} (Saving a checkpoint of the batches trained before it failed too: {save_error})")
        return InputError(f"{e} The batches trained before it are saved in {path}; once the data is mended, "
                          f"resume with `ccn train -f {path}`.")

    # -- checkpoints
    def _name(self) -> str | None:
        st = self.state
        if st.mb > 0:
            return ck.checkpoint_name(st.epoch, self.train_batches[st.index], st.mb)
        if st.last is None:
            return None
        return ck.checkpoint_name(st.last[0], st.last[1])

    def save(self) -> str:
        name = self._name()
        if name is None:
            name = ck.checkpoint_name(0, 0)
        arrays, plist = ck.net_arrays(self.net)
        meta = {
            "options": self.cfg.options,
            "net": {"layers_path": self.net.layers_path, "params_path": self.net.params_path,
                    "seed": int(self.net._net.seed), "step": int(self.net._net.step),
                    "data_dims": {str(k): list(v) for k, v in self.net.data_dims.items()}, "params": plist,
                    "layers_file_sha256": self.cfg.layers_file_sha256},
            "position": self.state.to_json(self.train_batches, self.cfg.provider_seed),
            "history": {"train": self.state.train_outputs, "test": self.state.test_outputs},
        }
        c = ck.Checkpoint(meta=meta, arrays=arrays, layers_text=self.net.layers_text, params_text=self.net.params_text)
        max_bytes = None if self.cfg.max_filesize_mb is None else int(self.cfg.max_filesize_mb * 1024 * 1024)
        path = ck.write(self.cfg.save_path, name, c, max_bytes=max_bytes)
        self._last_saved = name
        self.last_checkpoint = path
        return path


def frozen_params(net) -> set[str]:
    """The names of the parameters the core does not update (learning rate's base 0,
    ``Param::begin_update``)."""
    return {p.name for p in net.params if p.eps_base <= 0}


def weight_stats(net) -> list[str]:
    """cuda-convnet's per-layer lines: mean |W|, mean |inc| and their ratio; biases likewise. A frozen
    matrix (epsW or epsB 0) keeps its last momentum increment, so its line ends with
    ``(frozen: epsW 0)``: the [inc] shown is not applied any more."""
    frozen = frozen_params(net)
    lines = []
    for layer in net.layers:
        for i, wname in enumerate(layer.weights):
            w, inc = net.get(wname, "w"), net.get(wname, "inc")
            mw, mi = float(np.mean(np.abs(w), dtype=np.float64)), float(np.mean(np.abs(inc), dtype=np.float64))
            lines.append("Layer '%s' weights[%d]: %e [%e] [%e]" % (layer.name, i, mw, mi, mi / mw if mw > 0 else 0)
                         + (" (frozen: epsW 0)" if wname in frozen else ""))
        if layer.biases:
            b, inc = net.get(layer.biases, "w"), net.get(layer.biases, "inc")
            lines.append("Layer '%s' biases: %e [%e]" % (layer.name, float(np.mean(np.abs(b), dtype=np.float64)),
                                                         float(np.mean(np.abs(inc), dtype=np.float64)))
                         + (" (frozen: epsB 0)" if layer.biases in frozen else ""))
    return lines
