"""rcore info reads cores the kernel writes, not only its own."""

import json
import os
import subprocess

import pytest

from conftest import rcore_cmd


def test_info_reads_kernel_core(build, tmp_path):
    pattern = open("/proc/sys/kernel/core_pattern").read().strip()
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"core_pattern {pattern!r} does not write a core into the cwd")
    exe = build("crasher")
    r = subprocess.run(["sh", "-c", f"ulimit -c unlimited; exec {exe}"], cwd=tmp_path)
    assert r.returncode != 0
    cores = [f for f in os.listdir(tmp_path) if f.startswith("core")]
    assert len(cores) == 1, os.listdir(tmp_path)
    out = rcore_cmd("info", "--json", tmp_path / cores[0])
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["made_by"] == "kernel or gdb"
    assert d["comm"] == "crasher" and len(d["threads"]) == 1
    assert any(r["path"] == exe and r["stored"] for r in d["regions"])
    text = rcore_cmd("info", tmp_path / cores[0]).stdout
    assert exe in text
