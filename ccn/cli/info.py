"""`ccn info`: version, compiled backends, BLAS, threads and GPUs."""

from __future__ import annotations

import os

import click


def gather() -> dict:
    from .._native import core
    from .. import __version__

    b = core.build_info()
    return {
        "version": __version__,
        "backends": list(b["backends"]),
        "blas": b["blas"],
        "blas_config": b["blas_config"].strip(),
        "blas_threads": b["blas_threads"],
        "omp_threads": b["omp_threads"],
        "openmp": bool(b.get("openmp", True)),
        "gemm_threads": b.get("gemm_threads", b["blas_threads"]),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "cpu_count": os.cpu_count(),
        "compiler": b.get("compiler", ""),
        "conv_kernels": list(b.get("conv_kernels", ["gemm"])),
        "conv_kernel_setting": os.environ.get("CCN_CONV_KERNEL", "") or "auto",
        "simd_path": core.simd_path(),
        "simd_paths": list(core.simd_paths()),
        "simd_setting": os.environ.get("CCN_SIMD", ""),
        "cuda_status": core.cuda_status(),
        "gpus": list(core.cuda_devices()),
        "cublas": core.cublas_status() if "cuda" in b["backends"] else "",
    }


@click.command()
@click.option("--json", "json_out", is_flag=True, envvar="CCN_INFO_JSON", help="Print machine-readable JSON.")
def info(json_out):
    """Show the version, backends, BLAS, threads and visible GPUs."""
    d = gather()
    if json_out:
        import json

        click.echo(json.dumps(d, indent=2))
        return
    click.echo(f"ccn {d['version']}")
    click.echo(f"backends compiled in: {', '.join(d['backends'])}")
    if d["openmp"]:
        click.echo(f"BLAS: {d['blas']} ({d['blas_config']}), {d['blas_threads']} thread(s) per call; "
                   f"large GEMMs split over {d['gemm_threads']} OpenMP threads")
        click.echo(f"OpenMP threads: {d['omp_threads']} (of {d['cpu_count']} CPUs), "
                   f"wait policy {d['omp_wait_policy'].lower() or 'default'}")
    else:
        click.echo(f"BLAS: {d['blas']} ({d['blas_config']}), {d['blas_threads']} thread(s)")
        click.echo(f"OpenMP: not in this build, so the layers other than GEMMs run on one of the {d['cpu_count']} "
                   "CPUs (on macOS: brew install libomp, then reinstall ccn)")
    direct = "direct-avx512" in d["conv_kernels"]
    click.echo(f"conv kernels (CPU): {', '.join(d['conv_kernels'])}"
               + ("" if direct else " (no AVX-512F on this CPU: direct kernels unavailable)")
               + f"; CCN_CONV_KERNEL={d['conv_kernel_setting']}")
    setting = f"; CCN_SIMD={d['simd_setting']}" if d["simd_setting"] else ""
    if d["simd_setting"] and d["simd_setting"] not in d["simd_paths"]:
        setting += " is not one of them, so ccn's other commands refuse to run"
    click.echo(f"SIMD loops (CPU pool, norm, neuron): {d['simd_path']} (this CPU: {', '.join(d['simd_paths'])}){setting}")
    if "cuda" in d["backends"]:
        click.echo(f"CUDA: {d['cuda_status']}")
        click.echo(f"cuBLAS: {d['cublas']}")
    if d["gpus"]:
        for g in d["gpus"]:
            cc = ".".join(str(x) for x in g["compute_capability"])
            click.echo(f"GPU {g['index']}: {g['name']}, {g['memory_bytes'] / 2**30:.1f} GiB, compute capability {cc}")
    else:
        click.echo("GPU: no GPU" + ("" if "cuda" in d["backends"] else " (CUDA backend not compiled in)"))
