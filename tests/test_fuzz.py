"""A deterministic mutation fuzzer for the core reader (tests/corefuzz.py).

Base cores are made once per module: rcore's of a self-checking C target
(tests/progs/selfcheck.c), the kernel's of a crashing program and gdb's gcore.
Each case mutates one of them with a fixed seed and runs it through the CLI
with a memory limit and a timeout:

    info      no traceback, no hang, exit 0 or one "rcore: " line and exit 1
    restart   the same, and: refused -> no process of the target's executable
              exists and none ran; accepted -> the restarted target's own
              checks pass and it exits 0 ("wrong start" otherwise)
    restore   into a live target: refused or accepted, the target afterwards
              runs on, untraced, and its own checks keep passing ("damaged")

RCORE_FUZZ_CASES=N runs N info cases and N/7.5 restart and restore cases
(default 300, 40, 40)."""

import json
import os
import resource
import signal
import subprocess
import sys

import pytest

import corefuzz
from conftest import SRC, children, rcore_cmd, read_lines, wait_for, wait_lines

INFO_CASES = int(os.environ.get("RCORE_FUZZ_CASES", "300"))
PROCESS_CASES = max(1, INFO_CASES * 2 // 15)
MEMORY_LIMIT = 1 << 30          # RLIMIT_AS of each rcore run
TIMEOUT = 60
STEPS = 15                      # checks a restarted target runs before it exits 0
REPORT = os.environ.get("RCORE_FUZZ_REPORT")   # a file to write the figures to


def _limit_memory():
    # The soft limit only: a restarted process takes its checkpointed limits
    # back, which a lowered hard limit would forbid.
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, hard))


def run_rcore(*args, timeout=TIMEOUT):
    """(returncode or None when it hung, stdout, stderr) of `python3 -m rcore`
    in its own session, under the memory limit; on a timeout its whole
    process group is killed."""
    env = dict(os.environ, PYTHONPATH=SRC)
    p = subprocess.Popen([sys.executable, "-m", "rcore", *map(str, args)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL, preexec_fn=_limit_memory,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return None, out, err


def exe_pids(exe):
    """PIDs of the processes running executable exe."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/exe") == exe:
                    out.append(int(name))
            except OSError:
                pass
    return out


def kill_pids(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Tally:
    def __init__(self, name):
        self.name, self.cases, self.refused, self.accepted = name, 0, 0, 0
        self.failures, self.last = [], ""

    def fail(self, kind, what, detail=""):
        self.failures.append(f"{kind}: {what}: {detail.strip()[-600:]}")

    def check_cli(self, what, rc, err):
        """Common checks of one CLI run; False if the run already failed."""
        self.cases += 1
        self.last = err
        if "Traceback" in err:
            self.fail("traceback", what, err)
            return False
        if rc is None:
            self.fail("hang", what, err)
            return False
        lines = err.strip().splitlines()
        if rc == 0:
            self.accepted += 1
        elif rc == 1 and lines and lines[-1].startswith("rcore: "):
            self.refused += 1
        return True

    def report(self):
        counts = {}
        for f in self.failures:
            counts[f.split(":")[0]] = counts.get(f.split(":")[0], 0) + 1
        line = (f"{self.name}: {self.cases} mutated cores, {self.refused} refused, "
                f"{self.accepted} accepted; failures {counts or 0}")
        print(line)
        if REPORT:
            with open(REPORT, "a") as f:
                f.write(line + "\n" + "".join(f"  {x}\n" for x in self.failures))
        return line


def _mutated(tmp_path, base, seed, scope, name="m.core"):
    what, data = corefuzz.mutate(base, seed, scope)
    path = tmp_path / name
    path.unlink(missing_ok=True)
    write_sparse(path, data)
    return what, path


def write_sparse(path, data, chunk=1 << 16):
    """data into a new file at path (mode 0600), zero chunks left as holes: the
    cores hold megabytes of never-touched stack."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        zero = bytes(chunk)
        for at in range(0, len(data), chunk):
            piece = data[at:at + chunk]
            if piece != zero[:len(piece)]:
                os.pwrite(fd, piece, at)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


# --- base cores ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def target(build):
    return build("selfcheck")


def _start_selfcheck(exe, workdir, out):
    os.makedirs(workdir, exist_ok=True)
    # O_APPEND: a restore rolls the output's position back with the rest
    with open(out, "ab") as f:
        p = subprocess.Popen([exe, str(workdir), str(STEPS)], stdout=f,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_lines(out, 1)
    assert read_lines(out)[0] == "ready"
    return p


@pytest.fixture(scope="module")
def info_bases(target, build, tmp_path_factory):
    """name -> bytes of the cores `info` is fuzzed with."""
    d = tmp_path_factory.mktemp("fuzzbase")
    bases = {}
    p = _start_selfcheck(target, d / "w", d / "out")
    try:
        assert rcore_cmd("dump", p.pid, "-o", d / "rcore.core").returncode == 0
        r = subprocess.run(["gcore", "-o", str(d / "gdb"), str(p.pid)], capture_output=True)
        if r.returncode == 0:
            bases["gdb"] = (d / f"gdb.{p.pid}").read_bytes()
    finally:
        p.kill()
        p.wait()
    bases["rcore"] = (d / "rcore.core").read_bytes()
    bases["tree"] = _tree_root_core(d / "tree")
    pattern = open("/proc/sys/kernel/core_pattern").read().strip()
    if not pattern.startswith("|") and "/" not in pattern:
        subprocess.run(["sh", "-c", f"ulimit -c unlimited; exec {build('crasher')}"], cwd=d)
        cores = [f for f in os.listdir(d) if f.startswith("core")]
        if cores:
            bases["kernel"] = (d / cores[0]).read_bytes()
    for f in os.listdir(d):
        if f.startswith(("core", "gdb")) or f.endswith(".core"):
            os.unlink(d / f)
    return bases


def _tree_root_core(d):
    """The root core of a small tree (RCORE_TREE): a shell and its two children,
    in a session of their own (ended by process group)."""
    d.mkdir()
    p = subprocess.Popen(["sh", "-c", "sleep 1000 & sleep 1000 & echo ready; wait"],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        p.stdout.readline()
        wait_for(lambda: len(children(p.pid)) == 2, what="the shell's two children")
        r = rcore_cmd("dump", p.pid, "-o", d / "root.core")
        assert r.returncode == 0 and "a tree of 3 processes" in r.stdout, r.stderr
        return (d / "root.core").read_bytes()
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


BATCH = 100                     # info cases per child process


def run_info_batch(paths):
    """corefuzz's batch driver on paths, in a child under the memory limit;
    one result dict per path (a batch that dies or hangs fails its rest)."""
    env = dict(os.environ, PYTHONPATH=SRC)
    p = subprocess.Popen([sys.executable, corefuzz.__file__, "20", *map(str, paths)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL, preexec_fn=_limit_memory,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=TIMEOUT + 20 * len(paths))
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
    results = [json.loads(line) for line in out.splitlines()]
    for path in paths[len(results):]:
        results.append({"path": str(path), "rc": None, "hang": p.returncode is None,
                        "traceback": f"the batch died (exit {p.returncode}): {err[-2000:]}",
                        "stderr": ""})
    return results


def test_fuzz_info(info_bases, tmp_path):
    """Mutated rcore, kernel and gdb cores through the CLI's `info`."""
    tally = Tally("info")
    names = sorted(info_bases)
    for first in range(0, INFO_CASES, BATCH):
        cases = {}
        for i in range(first, min(first + BATCH, INFO_CASES)):
            name = names[i % len(names)]
            what, path = _mutated(tmp_path, info_bases[name], f"info:{name}:{i}", "any",
                                  f"m{i}.core")
            cases[str(path)] = f"{name} seed {i}: {what}"
        for r in run_info_batch(list(cases)):
            what = cases[r["path"]]
            os.unlink(r["path"])
            rc = None if r["hang"] else r["rc"]
            if not tally.check_cli(what, rc, r["traceback"] or r["stderr"]):
                continue
            if r["traceback"]:
                tally.fail("traceback", what, r["traceback"])
            elif rc not in (0, 1):
                tally.fail("exit", what, f"exit {rc}: {r['stderr']}")
            elif rc == 1 and len(r["stderr"].strip().splitlines()) != 1:
                tally.fail("message", what, r["stderr"])
    line = tally.report()
    assert not tally.failures, line + "\n" + "\n".join(tally.failures[:20])


# --- restart ------------------------------------------------------------------------

@pytest.fixture
def restart_base(target, tmp_path):
    """(core bytes, workdir) of a selfcheck target dumped and killed; the GO
    file in its workdir tells a restarted copy to finish."""
    work = tmp_path / "w"
    p = _start_selfcheck(target, work, tmp_path / "out")
    try:
        assert rcore_cmd("dump", p.pid, "-o", tmp_path / "base.core", "--kill").returncode == 0
    finally:
        p.kill()
        p.wait()
    (work / "GO").write_text("")
    data = (tmp_path / "base.core").read_bytes()
    os.unlink(tmp_path / "base.core")
    return data, work


def _restart_case(tally, tmp_path, target, base, seed, what_prefix=""):
    if seed is None:
        what, path = "unchanged", tmp_path / "m.core"
        write_sparse(path, base)
    else:
        what, path = _mutated(tmp_path, base, f"restart:{seed}", "headers")
    what = f"{what_prefix}seed {seed}: {what}"
    out, err_file = tmp_path / "r.out", tmp_path / "r.err"
    for f in (out, err_file):
        f.unlink(missing_ok=True)
    rc, _, err = run_rcore("restart", path, "--stdout", out, "--stderr", err_file)
    left = exe_pids(target)
    kill_pids(left)
    ran = read_lines(out) if out.exists() else []
    if not tally.check_cli(what, rc, err):
        return
    if left:
        tally.fail("left running", what, f"exit {rc}: {err}")
    if rc == 0:
        if "done" not in ran or any(line.startswith("FAIL") for line in ran):
            tally.fail("wrong start", what, "\n".join(ran[-3:]))
    elif ran:
        tally.fail("wrong start", what, f"exit {rc}: {err} / " + "\n".join(ran[-3:]))
    elif not err.strip().startswith("rcore: "):
        tally.fail("exit", what, f"exit {rc}: {err}")


def test_fuzz_restart(target, restart_base, tmp_path):
    base, _ = restart_base
    tally = Tally("restart")
    _restart_case(tally, tmp_path, target, base, None)
    assert not tally.failures and tally.refused == 0, (tally.failures, tally.last)
    for i in range(PROCESS_CASES):
        _restart_case(tally, tmp_path, target, base, i)
    line = tally.report()
    assert not tally.failures, line + "\n" + "\n".join(tally.failures[:20])


# --- restore ------------------------------------------------------------------------

class LiveTarget:
    """A running selfcheck and a core of it; replaced when a case kills it."""

    def __init__(self, exe, tmp_path):
        self.exe, self.tmp_path, self.n = exe, tmp_path, 0
        self.p = None
        self.start()

    def start(self):
        self.n += 1
        self.out = self.tmp_path / f"live.{self.n}.out"
        self.p = _start_selfcheck(self.exe, self.tmp_path / f"live.{self.n}", self.out)
        core = self.tmp_path / "live.core"
        assert rcore_cmd("dump", self.p.pid, "-o", core).returncode == 0
        self.base = core.read_bytes()
        os.unlink(core)

    def harm(self, since):
        """Why the target is not running on unharmed ("" if it is)."""
        pid = self.p.pid
        status = {}
        try:
            with open(f"/proc/{pid}/status") as f:
                status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except FileNotFoundError:
            pass
        if not status or status["State"][0] in "ZX":
            return f"target dead ({status.get('State', 'gone')}): " + \
                " / ".join(read_lines(self.out)[-2:])
        if status["State"][0] in "tT":
            return f"target left stopped ({status['State']})"
        if status["TracerPid"] != "0":
            return f"target left traced by {status['TracerPid']}"
        try:
            wait_for(lambda: len(read_lines(self.out)) > since + 2, timeout=10,
                     what="the target's checks")
        except AssertionError:
            return "target stopped printing its checks"
        fails = [line for line in read_lines(self.out) if line.startswith("FAIL")]
        return fails[0] if fails else ""

    def end(self):
        self.p.kill()
        self.p.wait()


def test_fuzz_restore(target, tmp_path):
    tally = Tally("restore")
    live = LiveTarget(target, tmp_path)
    accepted = None
    try:
        for i in range(PROCESS_CASES):
            what, path = _mutated(tmp_path, live.base, f"restore:{i}", "headers")
            what = f"seed {i}: {what}"
            since = len(read_lines(live.out))
            rc, _, err = run_rcore("restore", live.p.pid, path)
            if tally.check_cli(what, rc, err) and rc not in (0, 1):
                tally.fail("exit", what, f"exit {rc}: {err}")
            harm = live.harm(since)
            if harm:
                tally.fail("damaged target", what, f"{harm} (rcore exit {rc}: {err}; the "
                                                   f"last restore accepted: {accepted})")
                live.end()
                live.start()
                accepted = None
            elif rc == 0:
                accepted = what
    finally:
        live.end()
    line = tally.report()
    assert not tally.failures, line + "\n" + "\n".join(tally.failures[:20])
