"""rcore info reads cores the kernel writes, not only its own."""

import json
import os
import subprocess

import pytest

from conftest import rcore_cmd, wait_lines


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


def _notes(path):
    from rcore.elf.reader import CoreFile
    with CoreFile(str(path)) as c:
        return c.notes


def test_xsave_layout_note_as_the_kernel_writes_it(build, procs, tmp_path):
    """NT_X86_XSAVE_LAYOUT (Linux 6.11+) describes this CPU; rcore's must equal the
    kernel's for a process on the same machine."""
    pattern = open("/proc/sys/kernel/core_pattern").read().strip()
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"core_pattern {pattern!r} does not write a core into the cwd")
    subprocess.run(["sh", "-c", f"ulimit -c unlimited; exec {build('crasher')}"], cwd=tmp_path)
    kernel_core = [f for f in os.listdir(tmp_path) if f.startswith("core")][0]
    kernel = [d for o, t, d in _notes(tmp_path / kernel_core) if (o, t) == ("LINUX", 0x205)]
    if not kernel:
        pytest.skip("this kernel writes no NT_X86_XSAVE_LAYOUT")
    p = procs.start([build("dump_threads")])
    wait_lines(p.out_path, 1)
    assert rcore_cmd("dump", p.pid, "-o", tmp_path / "r.core").returncode == 0
    ours = [d for o, t, d in _notes(tmp_path / "r.core") if (o, t) == ("LINUX", 0x205)]
    assert ours == [kernel[0]] * 2          # one per thread, as the kernel does
