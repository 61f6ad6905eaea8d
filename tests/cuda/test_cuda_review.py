"""Regression tests for the CUDA kernel review (see the commits on branch cudareview):

  - conv.cu's chunking over cases honours CCN_UNFOLD_BYTES like the CPU layers (host rule,
    checked without a GPU; and on a GPU, forced small chunks give the same results);
  - the test-op harness uploads on the op's stream (a large array arrives intact).
Tests marked `cuda` skip without a GPU; the others need only a build with the CUDA backend."""

import numpy as np
import pytest

from ccn._native import core
from cudaops import close, conv_ref, op, same_bits

HAVE_CUDA_BUILD = "cuda" in core.build_info()["backends"]
needs_cuda_build = pytest.mark.skipif(not HAVE_CUDA_BUILD, reason="built without the CUDA backend")

ALEXNET_CONV1 = dict(N=256, C=3, S=224, F=96, groups=1, Cf=3, fs=11, stride=4, padding=0, M=55)
ALEXNET_CONV2 = dict(N=256, C=96, S=27, F=256, groups=2, Cf=48, fs=5, stride=1, padding=2, M=27)


def chunk_rule(geo, bprop, din, budget):
    """The rule conv_chunk_cases must follow (the CPU layers' conv_chunk on float32 columns)."""
    K, MM = geo["Cf"] * geo["fs"] ** 2, geo["M"] ** 2
    per_case = geo["groups"] * K * MM * (2 if bprop and din else 1) + (geo["F"] * MM if bprop else 0)
    return max(1, min(geo["N"], budget // (4 * per_case)))


def gpu_chunk(geo, bprop, din):
    r = op("conv_chunk", {"chunk": np.zeros(1)}, bprop=int(bprop), din=int(din), **geo)
    return int(np.asarray(r["chunk"]).reshape(-1)[0])


@needs_cuda_build
@pytest.mark.parametrize("geo", [ALEXNET_CONV1, ALEXNET_CONV2], ids=["alexnet-conv1", "alexnet-conv2"])
@pytest.mark.parametrize("bprop,din", [(False, False), (True, False), (True, True)])
def test_conv_chunk_rule_follows_ccn_unfold_bytes(monkeypatch, geo, bprop, din):
    monkeypatch.delenv("CCN_UNFOLD_BYTES", raising=False)
    assert gpu_chunk(geo, bprop, din) == chunk_rule(geo, bprop, din, 256 << 20)
    for budget in (1, 5_000_000, 64 << 20, 1 << 40):
        monkeypatch.setenv("CCN_UNFOLD_BYTES", str(budget))
        want = chunk_rule(geo, bprop, din, budget)
        assert gpu_chunk(geo, bprop, din) == want, f"CCN_UNFOLD_BYTES={budget}"
    for ignored in ("0", "-5", "junk"):  # not a positive integer: the default, as on the CPU
        monkeypatch.setenv("CCN_UNFOLD_BYTES", ignored)
        assert gpu_chunk(geo, bprop, din) == chunk_rule(geo, bprop, din, 256 << 20)


@needs_cuda_build
def test_conv_chunk_small_nets_unfold_in_one_chunk(monkeypatch):
    monkeypatch.delenv("CCN_UNFOLD_BYTES", raising=False)
    geo = dict(N=7, C=4, S=9, F=8, groups=2, Cf=2, fs=3, stride=2, padding=1, M=5)
    assert gpu_chunk(geo, False, False) == 7 and gpu_chunk(geo, True, True) == 7
    monkeypatch.setenv("CCN_UNFOLD_BYTES", "1")
    assert gpu_chunk(geo, True, True) == 1


@pytest.mark.cuda
@pytest.mark.parametrize("budget_cases", [1, 2, 3])
def test_conv_in_small_chunks_matches_reference(monkeypatch, budget_cases):
    """CCN_UNFOLD_BYTES forcing chunks of 1-3 cases (the last one partial) gives the same results."""
    rng = np.random.default_rng()
    N, C, S, F, groups, fs, stride, padding = 7, 4, 9, 6, 2, 3, 2, 1
    Cf, M = C // groups, 1 + int(np.ceil((2 * padding + S - fs) / stride))
    geo = dict(N=N, C=C, S=S, F=F, groups=groups, Cf=Cf, fs=fs, stride=stride, padding=padding, M=M)
    per_case_bprop = 4 * (groups * Cf * fs * fs * M * M * 2 + F * M * M)
    monkeypatch.setenv("CCN_UNFOLD_BYTES", str(per_case_bprop * budget_cases))
    x, W = rng.standard_normal((N, C * S * S)), rng.standard_normal((Cf * fs * fs, F))
    ref = conv_ref(x, W, **geo)
    close(op("conv_fprop", {"x": x, "W": W, "y": np.full(ref.shape, np.nan)}, accumulate=0, **geo)["y"], ref,
          what=f"conv_fprop in chunks of {budget_cases}")
    dout = rng.standard_normal(ref.shape)
    full = op("conv_bprop", {"x": x, "W": W, "dout": dout, "din": np.zeros_like(x), "dW": np.zeros_like(W)}, **geo)
    monkeypatch.delenv("CCN_UNFOLD_BYTES")
    whole = op("conv_bprop", {"x": x, "W": W, "dout": dout, "din": np.zeros_like(x), "dW": np.zeros_like(W)}, **geo)
    close(full["din"], whole["din"], rtol=1e-5, what=f"conv_bprop din in chunks of {budget_cases} vs one chunk")
    close(full["dW"], whole["dW"], rtol=1e-5, what=f"conv_bprop dW in chunks of {budget_cases} vs one chunk")


@pytest.mark.cuda
def test_large_upload_arrives_before_the_op_runs():
    """64 MB through the harness: the op (identity neuron) must see every element."""
    x = np.arange(1 << 24, dtype=np.float32)
    y = op("neuron_fprop", {"x": x, "y": np.zeros_like(x)}, code=0, a=1, b=1)["y"]
    same_bits(y, x, "identity neuron on a 64 MB array")
