"""`ccn prepare-data SOURCE ... --out DIR`: write a dataset in ccn's batch format.

Sources: ``builtin`` (procedural, no download), ``cifar`` (CIFAR-10/100 python batches),
``mnist`` (IDX files, MNIST or Fashion-MNIST), ``folder`` (class subfolders of images) and
``imagenet`` (ILSVRC2012 archives or an unpacked tree). Every source is resumable: rerun the
same command after an interruption and it continues after the last complete batch.
"""

from __future__ import annotations

import os
import time

import click

from ..batchrange import format_range

from . import options as opt


PROGRESS_SECONDS = 30.0  # off a terminal: a plain progress line this often (CCN_PROGRESS_SECONDS)


def _progress(description: str, total: int | None, unit: str = "batches"):
    """A rich progress bar with ETA on a terminal; elsewhere (nohup, Slurm, a pipe) a plain line
    on stderr every CCN_PROGRESS_SECONDS (30) seconds: done/total, rate, ETA. -> (advance(n), close())."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        return _plain_progress(description, total, unit)
    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn(unit), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console, transient=False)
    prog.start()
    task = prog.add_task(description, total=total)

    def advance(done, total_=None):
        prog.update(task, completed=done, total=total_ if total_ is not None else total)

    return advance, prog.stop


def _plain_progress(description: str, total: int | None, unit: str):
    v = os.environ.get("CCN_PROGRESS_SECONDS", "")
    try:
        every = float(v) if v.strip() else PROGRESS_SECONDS
        if not every >= 0:  # (NaN too)
            raise ValueError
    except ValueError:
        from ..errors import ConfigError

        raise ConfigError(f"CCN_PROGRESS_SECONDS must be a number of seconds, 0 or more (how often a progress line "
                          f"is printed off a terminal), got '{v}'.") from None
    t0 = time.monotonic()
    state = {"last": t0, "first": None}  # first: (time, done) of the first report (a resumed run starts above 0)

    def advance(done, total_=None):
        tot = total_ if total_ is not None else total
        now = time.monotonic()
        if state["first"] is None:
            state["first"] = (now, done)
        if now - state["last"] < every or (tot is not None and done >= tot and every > 0):
            return
        state["last"] = now
        t1, d1 = state["first"]
        rate = (done - d1) / (now - t1) if now > t1 else 0.0
        line = f"{description}: {done}" + (f"/{tot} {unit} ({100.0 * done / max(tot, 1):.1f}%)" if tot else f" {unit}")
        line += f", {rate:.1f} {unit}/s"
        if tot and rate > 0:
            line += f", ETA {_clock((tot - done) / rate)}"
        line += f", {_clock(now - t0)} elapsed"
        click.echo(line, err=True)

    return advance, lambda: None


def _clock(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _Terminated(BaseException):
    """SIGTERM arrived (a batch scheduler, `kill`, systemd): stop as Ctrl-C does."""


def _run(description: str, total, unit: str, out: str, work) -> None:
    """Run ``work(advance)`` with a progress display, SIGTERM turned into a clean stop (the worker
    processes are ended, the finished batches kept, exit 143), then print the summary."""
    import signal

    hit = []

    def on_term(signum, frame):
        # the first TERM stops the run; a second one (a scheduler repeating it) is ignored, so that it
        # cannot escape as a traceback or cut the worker joins short
        if not hit:
            hit.append(signum)
            raise _Terminated()

    t = time.time()
    try:
        old = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # (not the main thread)
        old = None
    adv, stop = _progress(description, total, unit)
    try:
        meta = work(adv)
    except _Terminated:
        stop()
        click.echo(f"error: stopped by SIGTERM. The batches finished so far in {out} are kept; rerun the same "
                   "command to continue.", err=True)
        raise SystemExit(143) from None
    finally:
        stop()
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    _summary(meta, out, time.time() - t)


def _warn(line: str) -> None:
    click.echo(f"warning: {line}", err=True)


def _summary(meta: dict, out: str, seconds: float | None = None) -> None:
    c = meta["counts"]
    if meta.get("already_complete"):
        click.echo(f"{out} already holds this dataset (same source and options); nothing to do.")
        seconds = None
    click.echo(f"{out}: {meta['num_train_cases']} training images in "
               f"{_span(meta['train_batches'])}, {meta['num_test_cases']} test images in "
               f"{_span(meta['test_batches'])}; {meta['num_classes']} classes, "
               f"{meta['channels']} x {meta['image_size'][0]} x {meta['image_size'][1]}, {meta['storage']}.")
    line = f"read {c['read']}, written {c['written']}, skipped {c['skipped']}"
    ign = (meta.get("ignored") or {}).get("count", 0)
    if ign:
        line += f", ignored {ign} file{'s' if ign > 1 else ''} (not images, or not in a class folder)"
    before = meta.get("resumed", {})
    if seconds:
        now = c["written"] - before.get("written", 0)
        line += f" in {seconds:.1f} s ({now / max(seconds, 1e-9):.0f} images/s)"
    if before.get("batches") and not meta.get("already_complete"):
        line += (f"; continued an interrupted run, whose {before['batches']} finished batches "
                 f"({before.get('written', 0)} images) were kept")
    click.echo(line + ".")
    if meta.get("mean_from") == "test":
        click.echo("note: no training images were prepared, so the mean image and colour PCA subtracted from the "
                   "inputs are those of the test images (a net trained elsewhere saw its training set's mean; for "
                   "ImageNet or CIFAR the two differ little).")
    for name, reason in meta.get("skipped", [])[:20]:
        click.echo(f"  skipped {name}: {reason}")
    if c["skipped"] > 20:
        where = os.path.join(out, meta["skipped_file"]) if meta.get("skipped_file") else \
            os.path.join(out, "batches.meta.json")
        click.echo(f"  ... and {c['skipped'] - 20} more (all {c['skipped']} with their reasons in {where})")
    elif c["skipped"] and meta.get("skipped_file"):
        click.echo(f"  (these are listed in {os.path.join(out, meta['skipped_file'])} too)")


def _span(nums) -> str:
    return "none" if not nums else f"batch{'es' if len(nums) > 1 else ''} {format_range(nums)}"


OUT = click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output folder.")
SEED = click.option("--seed", default=0, show_default=True, type=opt.SEED, help="Seed of the shuffle / generator.")
OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace a different dataset already in --out.")


@click.group("prepare-data")
def prepare_data():
    """Write a dataset as ccn batches (batches.meta.json + data_batch_N), resumably."""


@prepare_data.command("builtin")
@OUT
@click.option("--train-batches", default=5, show_default=True, type=int, help="Number of training batches.")
@click.option("--test-batches", default=1, show_default=True, type=int, help="Number of test batches.")
@click.option("--batch-size", default=2000, show_default=True, type=int, help="Images per batch.")
@click.option("--image-size", default=32, show_default=True, type=int, help="Image side in pixels.")
@SEED
@OVERWRITE
def builtin_cmd(out, train_batches, test_batches, batch_size, image_size, seed, overwrite):
    """The built-in dataset: 10 classes of coloured shapes and textures, generated (no download)."""
    from ..data import builtin

    _run("builtin", train_batches + test_batches, "batches", out,
         lambda adv: builtin.prepare(out, train_batches=train_batches, test_batches=test_batches,
                                     batch_size=batch_size, image_size=image_size, seed=seed, overwrite=overwrite,
                                     progress=adv))


@prepare_data.command("cifar")
@click.argument("src", type=click.Path())
@OUT
@click.option("--batch-size", default=10000, show_default=True, type=int,
              help="Split each CIFAR file into batches of at most this many images (files are never merged: the "
                   "default keeps CIFAR-10's files as batches 1-5 and 6).")
@click.option("--labels", type=click.Choice(["fine", "coarse"]), default="fine", show_default=True,
              help="CIFAR-100: which labels.")
@OVERWRITE
def cifar_cmd(src, out, batch_size, labels, overwrite):
    """CIFAR-10/100 from the python download (SRC: the .tar.gz or its extracted folder), or cuda-convnet2's
    cifar-10-py-colmajor folder (data_batch_1..6, batch 6 for testing). No pickle code runs."""
    from ..data import sources

    _run("cifar", None, "batches", out,
         lambda adv: sources.prepare_cifar(src, out, batch_size=batch_size, labels=labels, overwrite=overwrite,
                                           progress=adv))


@prepare_data.command("mnist")
@click.argument("src", type=click.Path())
@OUT
@click.option("--batch-size", default=10000, show_default=True, type=int, help="Images per batch.")
@click.option("--fashion", is_flag=True, help="Fashion-MNIST class names.")
@OVERWRITE
def mnist_cmd(src, out, batch_size, fashion, overwrite):
    """MNIST / Fashion-MNIST from a folder of IDX files (gzipped or not)."""
    from ..data import sources

    _run("mnist", None, "batches", out,
         lambda adv: sources.prepare_mnist(src, out, batch_size=batch_size, fashion=fashion, overwrite=overwrite,
                                           progress=adv))


WORKERS = click.option("--workers", "-j", default=0, type=click.IntRange(0, 512),
                       help="Worker processes (0 = all cores).")
QUALITY = click.option("--quality", default=90, show_default=True, type=click.IntRange(1, 100),
                       help="JPEG quality of the re-encoded images.")
CROP = click.option("--crop/--no-crop", default=True, show_default=True,
                    help="Centre-crop to size x size after scaling the shorter side to --size.")


@prepare_data.command("folder")
@click.argument("src", type=click.Path())
@OUT
@click.option("--size", default=64, show_default=True, type=int, help="Shorter side after scaling.")
@CROP
@click.option("--storage", type=click.Choice(["auto", "raw", "jpeg"]), default="auto", show_default=True,
              help="raw pixels or JPEG (auto: raw up to 64 pixels).")
@QUALITY
@click.option("--batch-size", default=10000, show_default=True, type=int, help="Images per batch.")
@click.option("--test-fraction", default=0.1, show_default=True, type=float,
              help="Share of each class held out for testing (without train/ and val/ folders).")
@SEED
@WORKERS
@OVERWRITE
def folder_cmd(src, out, size, crop, storage, quality, batch_size, test_fraction, seed, workers, overwrite):
    """Any folder of class subfolders of images (SRC/<class>/..., or SRC/train/<class> + SRC/val/<class>)."""
    from ..data import sources

    _run("images", None, "images", out,
         lambda adv: sources.prepare_folder(src, out, size=size, crop=crop, storage=storage, quality=quality,
                                            batch_size=batch_size, test_fraction=test_fraction, seed=seed,
                                            workers=workers, overwrite=overwrite, progress=adv, warn=_warn))


@prepare_data.command("imagenet")
@OUT
@click.option("--train", "train", type=click.Path(), help="ILSVRC2012_img_train.tar or an unpacked train/ folder.")
@click.option("--val", "val", type=click.Path(), help="ILSVRC2012_img_val.tar or a val/ folder (flat or per class).")
@click.option("--devkit", type=click.Path(), help="ILSVRC2012_devkit_t12.tar.gz (or unpacked): class names, IDs, "
                                                  "validation ground truth.")
@click.option("--label-order", type=click.Choice(["ilsvrc-id", "wnid"]), default="ilsvrc-id", show_default=True,
              help="Class indices: the devkit's ILSVRC2012_ID order, or sorted WNIDs (torchvision).")
@click.option("--size", default=256, show_default=True, type=int, help="Shorter side after scaling.")
@CROP
@QUALITY
@click.option("--batch-size", default=3072, show_default=True, type=int, help="Training images per batch.")
@SEED
@WORKERS
@OVERWRITE
def imagenet_cmd(out, train, val, devkit, label_order, size, crop, quality, batch_size, seed, workers, overwrite):
    """ImageNet (ILSVRC2012) as cuda-convnet's make-data prepared it: shorter side 256, centre crop, JPEG,
    3072 images per training batch, validation batches from the next multiple of 1000."""
    from ..data import imagenet

    _run("images", None, "images", out,
         lambda adv: imagenet.prepare_imagenet(out, train=train, val=val, devkit=devkit, label_order=label_order,
                                               size=size, crop=crop, quality=quality, batch_size=batch_size,
                                               seed=seed, workers=workers, overwrite=overwrite, progress=adv))
