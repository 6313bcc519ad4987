"""rcore restore of a Jupyter kernel between cells: its ZeroMQ eventfds, epolls
and TCP sockets stay in place (fds/ kinds), and variables roll back."""

import os

import pytest

import rcore
from conftest import rcore_cmd
from rcore.elf.reader import CoreFile

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")


def run_cell(kc, code):
    """Execute code in the kernel; returns what it printed."""
    msg_id = kc.execute(code)
    out = []
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out)


def test_kernel_rolled_back_between_cells(procs, tmp_path):
    km = jupyter_client.KernelManager(kernel_name="python3")
    # No history database: its journal file comes and goes with each cell, and
    # restore refuses to reopen a file that no longer exists.
    km.start_kernel(stderr=open(tmp_path / "kernel.err", "wb"),
                    env=dict(os.environ, IPYTHONDIR=str(tmp_path / "ipython")),
                    extra_arguments=["--HistoryManager.enabled=False"])
    kc = km.client()
    try:
        procs.adopt(km.provisioner.pid)
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        run_cell(kc, "x = 1")
        rcore.dump(km.provisioner.pid, str(tmp_path / "core"))
        with CoreFile(str(tmp_path / "core")) as core:       # its ZeroMQ sockets
            assert any(f.kind == "socket" and f.kind_state.get("listening")
                       for f in core.state.files)
        run_cell(kc, "x = 2")
        res = rcore_cmd("restore", km.provisioner.pid, tmp_path / "core")
        assert res.returncode == 0, res.stderr
        assert run_cell(kc, "print(x)") == "1\n"
        assert run_cell(kc, "print(x + 40)") == "41\n"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
