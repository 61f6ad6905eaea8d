"""The memory a step may take: the kernel's MemAvailable, or less under a cgroup limit (a Slurm
job, a container), which MemAvailable does not show."""

import os

from ccn.net import _cgroup_room


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_cgroup_v2_limits_of_the_group_and_its_parents(tmp_path):
    root = tmp_path / "cg"
    _write(str(root / "cgroup.controllers"), "cpu memory\n")
    _write(str(root / "job" / "memory.max"), "4000\n")  # the parent: 4000 - 1500 left
    _write(str(root / "job" / "memory.current"), "1500\n")
    _write(str(root / "job" / "step" / "memory.max"), "max\n")  # no limit of its own
    _write(str(root / "job" / "step" / "memory.current"), "1000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/job/step\n")
    assert _cgroup_room(str(root), str(proc)) == 2500
    _write(str(root / "job" / "step" / "memory.max"), "2000\n")
    assert _cgroup_room(str(root), str(proc)) == 1000
    # file cache the kernel can drop is room too (a job that has just read its data batches)
    _write(str(root / "job" / "step" / "memory.stat"), "anon 400\nfile 600\ninactive_file 500\nactive_file 100\n")
    assert _cgroup_room(str(root), str(proc)) == 1500


def test_cgroup_v1_namespaced_and_unlimited(tmp_path):
    root = tmp_path / "cg"
    mem = root / "memory"
    # the process's path is not under the mount (a container's namespaced view): the mount's top
    _write(str(mem / "memory.limit_in_bytes"), str(1 << 30) + "\n")
    _write(str(mem / "memory.usage_in_bytes"), str(1 << 28) + "\n")
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/docker/abc\n1:cpu:/\n")
    assert _cgroup_room(str(root), str(proc)) == (1 << 30) - (1 << 28)
    _write(str(mem / "memory.stat"), f"cache 100\ntotal_inactive_file {1 << 27}\n")
    assert _cgroup_room(str(root), str(proc)) == (1 << 30) - (1 << 28) + (1 << 27)
    _write(str(mem / "memory.limit_in_bytes"), "9223372036854771712\n")  # v1's "no limit"
    assert _cgroup_room(str(root), str(proc)) is None
    assert _cgroup_room(str(root), str(tmp_path / "missing")) is None
