"""restore-core-file inside gdb: roll a process gdb has stopped back to a gcore."""

import os
import subprocess

from conftest import ROOT, SRC

GDB_SCRIPT = os.path.join(ROOT, "gdb", "rcore.py")


def run_gdb(binary, commands, env=None):
    argv = ["gdb", "-batch", "-nx", "-ex", "set pagination off"]
    for c in commands:
        argv += ["-ex", c]
    r = subprocess.run(argv + [binary], capture_output=True, text=True, timeout=60, env=env)
    return r.stdout + r.stderr


def section(out, name):
    """Lines printed between `echo <name>` markers."""
    return out.split(f"@{name}@\n", 2)[1]


def test_gcore_then_restore_core_file_brings_back_stack_global_local(build, tmp_path):
    binary = build("restore_gdb")
    core = str(tmp_path / "g.core")
    out = run_gdb(binary, [
        "break checkpoint_here", "run", f"gcore {core}",
        "continue",                                        # 2nd call: everything changed
        "echo @changed@\\n", "print g_value", "print local", "echo @changed@\\n",
        f"source {GDB_SCRIPT}",
        f"restore-core-file {core}",
        "echo @bt@\\n", "bt", "echo @bt@\\n",
        "echo @vals@\\n", "print g_value", "print local", "frame 4", "print i",
        "echo @vals@\\n",
        "continue",                                        # runs on from the checkpoint
        "echo @next@\\n", "print g_value", "print local", "info signals SIGSTOP",
        "echo @next@\\n",
        "kill"])
    changed = section(out, "changed")
    assert "$1 = 1123" in changed and "$2 = 2123" in changed, out
    assert "Restored process" in out and "Not restored: the core has no rcore notes" in out
    bt = section(out, "bt").splitlines()
    assert bt[0].startswith("#0  checkpoint_here (local=1123)"), out
    assert "descend (depth=3, acc=112)" in bt[1] and "descend (depth=1, acc=1)" in bt[3]
    assert "in main ()" in bt[4]
    vals = section(out, "vals")
    assert "= 0\n" in vals.splitlines()[0] + "\n"           # g_value before the first +=
    assert "= 1123" in vals.splitlines()[1]                 # the local of checkpoint_here
    assert vals.splitlines()[-1].endswith("= 1")            # main's loop counter
    nxt = section(out, "next")
    # One call later, as after the checkpoint: no SIGSTOP left from the hand-over,
    # and the user's SIGSTOP handling is back.
    assert nxt.splitlines()[0].endswith("= 1123") and nxt.splitlines()[1].endswith("= 2123")
    assert "SIGSTOP       Yes\tYes\tYes" in nxt
    assert "SIGSTOP, Stopped" not in out


def test_python_import_rcore_gdb_and_refusal_keeps_process(build, tmp_path):
    binary = build("restore_gdb")
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a core at all" * 100)
    env = dict(os.environ, PYTHONPATH=SRC)
    out = run_gdb(binary, [
        "break checkpoint_here", "run",
        "python import rcore.gdb",
        f"rcore {junk}",
        "echo @after@\\n", "bt 1", "info inferiors", "echo @after@\\n",
        "continue", "print local", "kill"], env=env)
    assert "restore-core-file: " in out and "not an ELF file" in out, out
    after = section(out, "after")
    # gdb still holds the process, unchanged, and it runs on.
    assert "checkpoint_here (local=1123)" in after and "process" in after
    assert "$1 = 2123" in out


def test_rcore_core_restored_from_gdb_attached_process_runs_on_after_detach(procs, build,
                                                                           tmp_path):
    from conftest import proc_status, rcore_cmd, read_lines, wait_lines
    out = str(tmp_path / "ticks")
    p = procs.start([build("restore_ticker")], stdout=open(out, "ab"))
    wait_lines(out, 2)
    core = str(tmp_path / "t.core")
    assert rcore_cmd("dump", p.pid, "-o", core).returncode == 0
    at_dump = len(read_lines(out))
    wait_lines(out, at_dump + 3)
    r = subprocess.run(["gdb", "-batch", "-nx", "-p", str(p.pid), "-ex", f"source {GDB_SCRIPT}",
                        "-ex", f"restore-core-file {core}", "-ex", "echo @bt@\\n", "-ex", "bt",
                        "-ex", "echo @bt@\\n", "-ex", "detach"],
                       capture_output=True, text=True, timeout=60)
    out_gdb = r.stdout + r.stderr
    assert "Restored process" in out_gdb and "Not restored" not in out_gdb, out_gdb
    assert " in main (" in section(out_gdb, "bt")
    before = len(read_lines(out))
    ticks = [int(x.split()[1]) for x in wait_lines(out, before + 3)]
    back = [i for i in range(1, len(ticks)) if ticks[i] != ticks[i - 1] + 1]
    # Back to the checkpoint's tick, and running (not left stopped) after detach.
    assert len(back) == 1 and ticks[back[0]] <= at_dump + 1
    status = proc_status(p.pid)
    assert status["TracerPid"] == "0" and not status["State"].startswith(("T", "t"))
