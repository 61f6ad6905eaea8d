"""The CUDA simulator (tools/cudasim): it catches the mistakes it claims to catch
(sim_cases.cu, compiled through transform.py against libccnsim_rt.so), and every test under
tests/cuda passes with the CUDA backend running on it, so the GPU code is exercised on
machines and CI runs without a GPU. Skips where cmake, ninja, pybind11 or a C++ compiler are
missing (the test extra installs the first three)."""

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIM = os.path.join(ROOT, "tools", "cudasim")
BUILD = os.environ.get("CCNSIM_BUILD_DIR", os.path.join(ROOT, "build", "sim"))
sys.path.insert(0, SIM)
import transform  # noqa: E402

pytestmark = pytest.mark.skipif(bool(os.environ.get("CCN_CORE")), reason="already inside a simulator run")


def _env():
    env = dict(os.environ)
    # the venv's tools (cmake, ninja from the test extra) when run as .venv/bin/python -m pytest
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHON"] = sys.executable
    env["CCNSIM_BUILD_DIR"] = BUILD
    env.pop("CCN_CORE", None)
    return env


def _missing():
    env = _env()
    for tool in ("cmake", "ninja"):
        if not shutil.which(tool, path=env["PATH"]):
            return f"{tool} is not installed"
    if not shutil.which(os.environ.get("CXX", "c++"), path=env["PATH"]):
        return "no C++ compiler"
    try:
        import pybind11  # noqa: F401
    except ImportError:
        return "pybind11 is not installed"
    return None


def _run_sim(*pytest_args, **env):
    """tools/cudasim/run.sh with these pytest arguments (and extra environment) from the
    repository folder; the CompletedProcess."""
    return subprocess.run(["bash", os.path.join(SIM, "run.sh"), *pytest_args], env={**_env(), **env},
                          capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def sim_build():
    why = _missing()
    if why:
        pytest.skip(f"the CUDA simulator cannot be built here: {why}")
    r = subprocess.run(["bash", os.path.join(SIM, "build.sh")], env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, f"tools/cudasim/build.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return os.path.join(BUILD, "lib")


@pytest.fixture(scope="module")
def cases(sim_build, tmp_path_factory):
    d = tmp_path_factory.mktemp("simcases")
    src = os.path.join(ROOT, "tests", "cudasim", "sim_cases.cu")
    cpp = d / "sim_cases.cpp"
    text, launches = transform.transform(open(src, encoding="utf-8").read(), "tests/cudasim/sim_cases.cu")
    assert launches == 18
    cpp.write_text(text)
    exe = d / "sim_cases"
    cmd = [os.environ.get("CXX", "c++"), "-std=c++17", "-O1", "-ffp-contract=off", f"-I{SIM}/include", str(cpp),
           "-o", str(exe), f"-L{sim_build}", "-lccnsim_rt", f"-Wl,-rpath,{sim_build}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]

    def run(case, **env):
        p = subprocess.run([str(exe), case], capture_output=True, text=True, timeout=60, env={**os.environ, **env})
        return p.returncode, p.stdout, p.stderr

    return run


def _values(out, key):
    return [float(v) for v in re.findall(rf"^{key} (\S+)$", out, re.M)]


def test_transform_keeps_lines_and_finds_the_kernels_with_barriers():
    src = ("__global__ void a(float* x) { __syncthreads(); }\n__device__ void helper() { __syncthreads(); }\n"
           "__global__ void b(float* x) { helper(); }\n__global__ void c(float* x, int n) { if (n) x[0] = 1; }\n"
           "void go(float* x, cudaStream_t s) {\n  c<<<dim3(2, 3),\n    64, 0, s>>>(x,\n      4);\n"
           "  ns::k<float, 3><<<1, 32>>>();\n}\n")
    out, n = transform.transform(src, "x.cu")
    assert n == 2
    assert transform.syncing_functions(src) == {"a", "helper", "b"}
    body = out.split("\n", 2)[2]  # after the include and the #line
    assert body.count("\n") == src.count("\n")
    assert 'ccnsim_launch("c", __FILE__, __LINE__, false, dim3(2, 3), \n    64,  0,  s, c, x,\n      4);' in body
    assert 'ccnsim_launch("ns::k<float,3>", __FILE__, __LINE__, false, 1,  32, 0, 0, ns::k<float, 3>)' in body


def test_barriers_and_shared_memory(cases):
    rc, out, err = cases("reduce")
    assert rc == 0, err
    assert _values(out, "launch") == [0]
    assert _values(out, "sum") == [500500.0] * 3


def test_device_math_is_faithful_not_correctly_rounded(cases):
    """expf and powf in device code: about half the results the other neighbour of the exact
    value (as a GPU's, documented at 2 and 4 ulp, may be), never further, the same on every run;
    exact results stay exact. CCNSIM_MATH=exact gives the nearest floats; a typo is refused."""
    rc, out, err = cases("math")
    assert rc == 0, err
    off, far = _values(out, "off")[0], _values(out, "far")[0]
    assert 0.3 * 8000 < off < 0.7 * 8000 and far == 0, out
    assert _values(out, "exp0") == [1.0] and _values(out, "same") == [1], out
    rc, out, err = cases("math", CCNSIM_MATH="exact")
    assert rc == 0 and _values(out, "off") == [0] and _values(out, "same") == [1], out + err
    rc, out, err = cases("math", CCNSIM_MATH="Exact")
    assert rc == 2 and "CCNSIM_MATH=Exact is not one of: faithful, exact" in err, (out, err)


def test_new_device_memory_reads_as_nan(cases):
    rc, out, err = cases("uninitialised")
    vals = _values(out, "value")
    assert rc == 0 and len(vals) == 5 and all(v != v for v in vals), out + err


@pytest.mark.parametrize("case", ["past_end_write", "slack_write"])
def test_a_kernel_writing_past_an_allocation_is_an_illegal_address(cases, case):
    rc, out, err = cases(case)
    assert rc == 0, err
    assert _values(out, "launch") == [0]
    assert _values(out, "sync") == [700]  # cudaErrorIllegalAddress, from then on
    assert _values(out, "sync_again") == [700]
    assert "kernel twice_kernel (launched at tests/cudasim/sim_cases.cu:" in err
    # the error ccn raises carries the report: cudaGetErrorString appends it
    assert re.search(r"^error_string an illegal memory access was encountered \[ccn CUDA simulator: kernel twice_kernel",
                     out, re.M), out
    if case == "past_end_write":  # reading x[1024]: the guard page after allocation #1
        assert "block (4,0,0) thread (0,0,0)" in err and "0 bytes past the end of device allocation #1 of 4096" in err
    else:
        assert "wrote past the end of device allocation #2 of 4000 bytes" in err


def test_a_copy_of_one_allocations_canary_into_anothers_is_still_seen(cases):
    rc, out, err = cases("copy_one_too_many")
    assert rc == 0 and _values(out, "sync") == [700], out + err
    assert "wrote past the end of device allocation #2 of 40 bytes" in err


def test_a_misspelt_thread_order_is_refused(cases):
    rc, out, err = cases("reduce", CCNSIM_ORDER="Reverse")
    assert rc == 2 and "CCNSIM_ORDER=Reverse is not one of: forward, reverse" in err, (out, err)


def test_a_kernel_writing_before_an_allocation_is_an_illegal_address(cases):
    rc, out, err = cases("before_start")
    assert rc == 0 and _values(out, "sync") == [700], out + err
    assert "kernel before_start_kernel" in err and "wrote before the start of device allocation #1 of 100" in err


def test_a_host_pointer_given_to_a_kernel_faults(cases):
    rc, out, err = cases("host_pointer_arg")
    assert rc == 0 and _values(out, "launch") == [0] and _values(out, "sync") == [700], out + err
    assert _values(out, "host") == [0.0]  # the kernel never ran
    assert "kernel fill_kernel" in err and "a kernel argument is not a device pointer: argument 1 (0x" in err


def test_shared_memory_holds_nan_at_the_start_of_each_block(cases):
    rc, out, err = cases("shared_leftover")
    assert rc == 0, err
    (b1,) = _values(out, "block1")
    assert _values(out, "block0") == [7.0] and b1 != b1, out  # block 1 never wrote its shared array


def test_thread_order_can_be_reversed_to_show_races(cases):
    rc, out, err = cases("race")
    assert rc == 0 and _values(out, "last") == [7.0], out + err  # in order: each thread sees its neighbour's write
    rc, out, err = cases("race", CCNSIM_ORDER="reverse")
    assert rc == 0 and _values(out, "last") == [1.0], out + err  # reversed: each reads the 0 still there


def test_a_pageable_copy_is_staged_at_the_call_and_runs_in_stream_order(cases):
    rc, out, err = cases("pageable_staged")
    assert rc == 0, err
    (without,) = _values(out, "without_wait")
    assert without != without and _values(out, "copied") == [7.0], out
    assert len(re.findall("cross-stream hazard", err)) == 1, err


def test_an_event_is_not_ready_while_its_work_is_queued(cases):
    rc, out, err = cases("event_query")
    assert rc == 0 and _values(out, "query") == [600, 0, 0], out + err  # cudaErrorNotReady, then runs
    assert _values(out, "elapsed") == [400], out  # no timing on a cudaEventDisableTiming event


def test_launch_configurations_a_gpu_refuses(cases):
    rc, out, err = cases("bad_config")
    assert rc == 0 and _values(out, "launch") == [9, 9, 9], out + err  # cudaErrorInvalidConfiguration
    assert "kernel fill_kernel (launched at tests/cudasim/sim_cases.cu:" in out
    assert "x block (2048,1,1) = 2048 threads a block" in out


def test_threads_leaving_before_a_barrier_are_reported(cases):
    rc, out, err = cases("divergent")
    assert rc == 0 and _values(out, "sync") == [719], out + err  # cudaErrorLaunchFailure
    assert "barrier divergence" in err and "16 threads wait at a __syncthreads()" in err


def test_host_code_reading_device_memory_faults(cases):
    rc, out, err = cases("host_touch")
    assert rc != 0 and "about to read" in out and "read " not in out.split("about to read")[1]
    assert "host code touched device memory" in err and "device allocation #1 of 32 bytes, offset 8" in err


def test_streams_run_only_when_forced_so_a_missing_wait_reads_stale_data(cases):
    rc, out, err = cases("streams")
    assert rc == 0, err
    (without,), (with_,) = _values(out, "without_wait"), _values(out, "with_wait")
    assert without != without and with_ == 14.0
    # and the unordered pair is named, once (the run with the wait has none)
    hazards = re.findall(r"cross-stream hazard: (.*)", err)
    assert len(hazards) == 1, err
    assert re.match(r"kernel twice_kernel \(launched at tests/cudasim/sim_cases.cu:\d+\) on stream #1 reads device "
                    r"allocation #\d+ of 16 bytes, which cudaMemcpyAsync \(a copy of 16 bytes\) on stream #2 wrote, "
                    r"with nothing ordering the two", hazards[0]), hazards[0]


def test_a_queued_copy_from_pinned_memory_reads_it_when_it_runs(cases):
    rc, out, err = cases("pinned_reuse")
    assert rc == 0, err
    assert _values(out, "without_wait") == [2.0] and _values(out, "with_wait") == [1.0]


def test_copies_check_their_kind_and_extent(cases):
    rc, out, err = cases("memcpy_kind")
    assert rc == 0 and _values(out, "wrong_kind") == [1] and _values(out, "past_end") == [1], out + err


def test_cublas_sgemm_is_column_major_and_checks_its_arguments(cases):
    rc, out, err = cases("gemm")
    assert rc == 0, err
    assert _values(out, "status") == [0, 0]
    assert _values(out, "max_error")[0] < 1e-5
    assert _values(out, "bad_lda") == [7]  # CUBLAS_STATUS_INVALID_VALUE
    assert _values(out, "sync") == [700]
    assert "matrix B and C does not lie inside one device allocation" in err


def test_every_gpu_test_passes_on_the_simulator(sim_build):
    """tests/cuda with the CUDA backend on the simulator (tools/cudasim/run.sh)."""
    r = _run_sim("tests/cuda", "-q", "-x", "-p", "no:randomly")
    tail = (r.stdout + r.stderr)[-6000:]
    assert r.returncode == 0, f"tests/cuda on the CUDA simulator failed:\n{tail}"
    m = re.search(r"(\d+) passed", r.stdout)
    assert m and int(m.group(1)) > 150, tail


def test_kernel_tests_pass_with_blocks_and_threads_in_reverse_order(sim_build):
    """The kernel and layer tests again with CCNSIM_ORDER=reverse: a kernel whose result
    depends on the order its threads or blocks run in (a race on a GPU) fails one of the two."""
    r = _run_sim("tests/cuda/test_cuda_kernels.py", "tests/cuda/test_cuda_layers_more.py",
                 "tests/cuda/test_cuda_layers_net.py", "-q", "-x", CCNSIM_ORDER="reverse")
    tail = (r.stdout + r.stderr)[-6000:]
    assert r.returncode == 0, f"kernel tests with CCNSIM_ORDER=reverse failed:\n{tail}"
    m = re.search(r"(\d+) passed", r.stdout)
    assert m and int(m.group(1)) > 80, tail


_FAULTING_TEST = """
import ctypes, os

def _sim():
    rt = ctypes.CDLL(os.environ["CCNSIM_RUNTIME"])
    p = ctypes.c_void_p()
    assert rt.cudaMalloc(ctypes.byref(p), 16) == 0
    return rt, p

def test_fault_swallowed():  # an sgemm past its allocation, its error never checked
    rt, p = _sim()
    h = ctypes.c_void_p()
    rt.cublasCreate_v2(ctypes.byref(h))
    one = ctypes.c_float(1.0)
    rt.cublasSgemm_v2(h, 0, 0, 4, 4, 4, ctypes.byref(one), p, 4, p, 4, ctypes.byref(one), p, 4)
    rt.cudaDeviceSynchronize()

def test_fault_and_a_failure():
    test_fault_swallowed()
    assert False, "failed on its own"

def test_clean():
    _sim()
"""


def test_a_test_during_which_the_simulator_reported_a_fault_fails(sim_build, tmp_path):
    """tests/conftest.py on the simulator: a fault nothing checked still fails its test; a
    test failing anyway carries the report as a section; the next test starts clean."""
    (tmp_path / "test_inner.py").write_text(_FAULTING_TEST)
    r = _run_sim(str(tmp_path / "test_inner.py"), "-p", "conftest", "-rA", "-p", "no:randomly",
                 PYTHONPATH=os.path.join(ROOT, "tests"))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    summary = out.split("short test summary info")[1]
    assert re.search(r"ERROR .*::test_fault_swallowed", summary), out  # fails at its teardown
    assert "ERROR at teardown of test_fault_swallowed" in out and "the CUDA simulator reported:" in out
    assert re.search(r"FAILED .*::test_fault_and_a_failure", summary), out  # once, with the report as a section
    assert not re.search(r"ERROR .*::test_fault_and_a_failure", summary), out
    failure = out.split("_ test_fault_and_a_failure _")[1]
    assert "failed on its own" in failure and "- CUDA simulator -" in failure, out
    assert re.search(r"PASSED .*::test_clean", summary) and not re.search(r"(ERROR|FAILED) .*::test_clean", summary)
    assert "matrix A and B and C does not lie inside one device allocation" in out
