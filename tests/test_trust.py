"""Root must not become a user's tool: a core owned by a user gives a process no
more than that user has (owner.py), and a file a core names cannot be swapped
or rewritten under it (identity.py).

Each attack is played as a real unprivileged user would: the user (rcoretest,
created here if missing) runs a program, dumps it with rcore, edits rcore's
JSON notes in the core it owns, and hands the core to root, who runs
`rcore restart` or `rcore restore`: each must be refused with one line, no
process started, nothing touched."""

import importlib
import json
import os
import pwd
import shutil
import struct
import subprocess
import tempfile

import pytest

from conftest import (PROGS, SRC, checkpoint_and_kill, proc_status, read_lines, rcore_cmd,
                      restart, wait_lines)

USER = "rcoretest"
PYTHON = "/usr/bin/python3"          # the user cannot reach a Python under /root
NT_RCORE_PROCESS, NT_RCORE_MAPPINGS, NT_RCORE_FILES = 0x52430001, 0x52430003, 0x52430004
PT_NOTE = 4

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(PYTHON),
                                reason="needs root (to create a user) and a system python3")


@pytest.fixture(scope="session")
def user():
    """The unprivileged user the attacks are played as (created if missing; an
    existing one is used as it is and never deleted)."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-M", "-r", "-s", "/usr/sbin/nologin", USER], check=True)
        return pwd.getpwnam(USER)


def as_user(user):
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"]


@pytest.fixture
def home(user):
    """A directory the user owns and everyone may search (not under pytest's
    root-only tmp_path)."""
    path = tempfile.mkdtemp(prefix="rcore-trust-")
    os.chmod(path, 0o755)
    os.chown(path, user.pw_uid, user.pw_gid)
    yield path
    shutil.rmtree(path)


def built(home, name, *flags, src=None):
    """Compile tests/progs/NAME.c (or src) into home, owned by root, mode 0755."""
    out = os.path.join(home, name)
    subprocess.run(["gcc", "-O0", *flags, "-o", out, src or os.path.join(PROGS, name + ".c")],
                   check=True)
    os.chmod(out, 0o755)
    return out


def start_as_user(procs, user, home, argv):
    """argv as the user, in home, its output in a file the user owns."""
    out = os.path.join(home, f"out.{len(procs.popens)}")
    with open(out, "ab") as f:
        os.fchown(f.fileno(), user.pw_uid, user.pw_gid)
        p = procs.start(as_user(user) + argv, stdout=f, cwd=home)
    p.out_path = out
    wait_lines(out, 2)
    return p


def dump_as_user(user, pid, core):
    r = subprocess.run(as_user(user) + [PYTHON, "-m", "rcore", "dump", str(pid), "-o", core],
                       env=dict(os.environ, PYTHONPATH=SRC), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert os.stat(core).st_uid == user.pw_uid


def users_core(procs, user, home, argv):
    """A core the user dumped of their own process, which is then ended (its PID
    is free for a restart).  Returns (core path, that PID)."""
    p = start_as_user(procs, user, home, argv)
    core = os.path.join(home, "core")
    dump_as_user(user, p.pid, core)
    p.kill()
    p.wait(timeout=10)
    return core, p.pid


def forge(core, ntype, edit):
    """Edit the JSON of rcore note `ntype` in `core` as its owner can: edit(obj)
    changes the decoded object; the notes are written again at the end of the
    file (the edited note may be longer) and the PT_NOTE header points there."""
    with open(core, "r+b") as f:
        ehdr = f.read(64)
        (phoff,) = struct.unpack_from("<Q", ehdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            ph = f.read(phentsize)
            if struct.unpack_from("<I", ph)[0] == PT_NOTE:
                break
        at = phoff + i * phentsize
        offset, filesz = struct.unpack_from("<Q", ph, 8)[0], struct.unpack_from("<Q", ph, 32)[0]
        f.seek(offset)
        blob = f.read(filesz)
        out, pos, found = b"", 0, False
        pad = lambda n: (n + 3) & ~3            # noqa: E731
        while pos + 12 <= len(blob):
            namesz, descsz, typ = struct.unpack_from("<III", blob, pos)
            name = blob[pos + 12: pos + 12 + namesz]
            desc = blob[pos + 12 + pad(namesz): pos + 12 + pad(namesz) + descsz]
            pos += 12 + pad(namesz) + pad(descsz)
            if name == b"RCORE\0" and typ == ntype:
                obj = json.loads(desc[4:])
                edit(obj)
                desc, found = desc[:4] + json.dumps(obj).encode(), True
            out += (struct.pack("<III", namesz, len(desc), typ) + name.ljust(pad(namesz), b"\0")
                    + desc.ljust(pad(len(desc)), b"\0"))
        assert found, f"no note {ntype:#x} in {core}"
        end = f.seek(0, os.SEEK_END)
        f.write(b"\0" * (-end % 8) + out)
        f.seek(at + 8)
        f.write(struct.pack("<Q", end + (-end % 8)))
        f.seek(at + 32)
        f.write(struct.pack("<QQ", len(out), len(out)))


def identity_of(path):
    st = os.stat(path)
    return dict(dev=st.st_dev, inode=st.st_ino, size=st.st_size, mtime_ns=st.st_mtime_ns,
                ctime_ns=st.st_ctime_ns)


def add_fd(core, fd, **entry):
    """A descriptor the process never had, as the core's owner would forge it."""
    def edit(obj):
        obj["fds"].append(dict(dict(fd=fd, kind="file", flags=os.O_RDONLY, pos=0,
                                    cloexec=False, description=fd, rdev=0, deleted=False,
                                    dev=0, inode=0, size=0, mtime_ns=0, ctime_ns=0),
                               **entry))
    forge(core, NT_RCORE_FILES, edit)


def assert_refused(r, pid, *words):
    """One line, exit status 1, and no process with the checkpointed PID."""
    err = r.stderr.strip()
    assert r.returncode == 1, (r.returncode, r.stdout, err)
    assert len(err.splitlines()) == 1 and err.startswith("rcore: "), err
    for w in words:
        assert w in err, err
    if pid is not None:
        assert not os.path.exists(f"/proc/{pid}")


def restart_as_root(procs, core, pid):
    procs.adopt(pid)            # ended by the fixture even when a test fails
    return rcore_cmd("restart", "--detach", core)


@pytest.fixture
def ticker(home):
    return built(home, "ticker")


# --- the core's owner -----------------------------------------------------------

def test_users_own_core_restarts_as_that_user(procs, user, home, ticker):
    """Root restarts a user's unforged core: it runs as that user, with no
    capability, and goes on from its checkpoint."""
    core, pid = users_core(procs, user, home, [ticker])
    r = restart_as_root(procs, core, pid)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == pid
    status = proc_status(pid)
    assert status["Uid"].split() == [str(user.pw_uid)] * 4
    assert status["Gid"].split() == [str(user.pw_gid)] * 4
    assert [int(g) for g in status["Groups"].split()] == \
        sorted(set(os.getgrouplist(USER, user.pw_gid)))
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == 0
    out = os.path.join(home, "out.0")
    n = len(read_lines(out))
    wait_lines(out, n + 2)


def test_credentials_claiming_root_refused(procs, user, home, ticker):
    core, pid = users_core(procs, user, home, [ticker])

    def to_root(obj):
        obj["creds"]["uid"] = [0, 0, 0, 0]
        obj["creds"]["gid"] = [0, 0, 0, 0]
    forge(core, NT_RCORE_PROCESS, to_root)
    assert_refused(restart_as_root(procs, core, pid), pid, "claims uid 0", USER)


def test_credentials_claiming_a_foreign_group_refused(procs, user, home, ticker):
    core, pid = users_core(procs, user, home, [ticker])
    forge(core, NT_RCORE_PROCESS, lambda obj: obj["creds"]["groups"].append(0))
    assert_refused(restart_as_root(procs, core, pid), pid, "claims gid 0")


@pytest.mark.parametrize("mode,who", [(0o620, "group"), (0o602, "others")])
def test_core_others_may_write_refused(procs, user, home, ticker, mode, who):
    core, pid = users_core(procs, user, home, [ticker])
    os.chmod(core, mode)
    assert_refused(restart_as_root(procs, core, pid), pid, f"writable by {who}")


@pytest.mark.parametrize("flags", [os.O_RDONLY, os.O_RDWR])
def test_descriptor_on_root_only_file_refused(procs, user, home, ticker, flags):
    core, pid = users_core(procs, user, home, [ticker])
    secret = os.path.join(home, "secret")
    with open(secret, "w") as f:
        f.write("root's\n")
    os.chmod(secret, 0o600)
    add_fd(core, 5, path=secret, flags=flags, **identity_of(secret))
    assert_refused(restart_as_root(procs, core, pid), pid, "fd 5", secret,
                   "Permission denied")


def test_append_descriptor_cannot_truncate_a_root_file(procs, user, home, ticker):
    """O_WRONLY|O_APPEND with a checkpointed size of 0: rcore would cut the file
    back to 0 bytes "to undo appends made since"."""
    core, pid = users_core(procs, user, home, [ticker])
    precious = os.path.join(home, "precious")
    with open(precious, "w") as f:
        f.write("root's data\n")
    os.chmod(precious, 0o644)           # the user may read it, not write it
    add_fd(core, 5, path=precious, flags=os.O_WRONLY | os.O_APPEND,
           **dict(identity_of(precious), size=0))
    assert_refused(restart_as_root(procs, core, pid), pid, "fd 5", "Permission denied")
    with open(precious) as f:
        assert f.read() == "root's data\n"


def test_directory_descriptor_on_root_only_directory_refused(procs, user, home, ticker):
    core, pid = users_core(procs, user, home, [ticker])
    private = os.path.join(home, "private")
    os.mkdir(private, 0o700)
    add_fd(core, 5, kind="dir", path=private, flags=os.O_RDONLY | os.O_DIRECTORY,
           **identity_of(private))
    assert_refused(restart_as_root(procs, core, pid), pid, "fd 5", private,
                   "Permission denied")


def test_unlinked_file_is_not_recreated_in_a_root_only_directory(procs, user, home, ticker):
    """An unlinked-file note naming a root-only directory: rcore, as the user,
    cannot create the file there (a cron directory, say); it recreates it
    where the user can, owned by the user."""
    core, pid = users_core(procs, user, home, [ticker])
    private = os.path.join(home, "private")
    os.mkdir(private, 0o700)
    before = os.stat(private)
    add_fd(core, 5, path=os.path.join(private, "job"), flags=os.O_RDWR, deleted=True,
           contents=b"* * * * * root sh /tmp/x\n".hex(), contents_stored=True, size=25)
    r = restart_as_root(procs, core, pid)
    after = os.stat(private)
    assert os.listdir(private) == []
    assert (after.st_mtime_ns, after.st_ctime_ns) == (before.st_mtime_ns, before.st_ctime_ns)
    assert r.returncode == 0, r.stderr
    recreated = os.stat(f"/proc/{pid}/fd/5")
    assert recreated.st_uid == user.pw_uid
    assert not os.readlink(f"/proc/{pid}/fd/5").startswith(private)


def test_set_user_id_executable_refused(procs, user, home, ticker):
    """The user names a set-user-ID root program (its identity is public:
    stat shows it) as the executable: execve would make the restarted process
    root, running the user's memory."""
    core, pid = users_core(procs, user, home, [ticker])
    os.chmod(ticker, 0o4755)            # root's set-user-ID program, say /usr/bin/passwd
    ident = identity_of(ticker)

    def exe(obj):
        obj["exe"].update(ident)

    def mapped(obj):
        obj["files"][ticker].update(ident)
    forge(core, NT_RCORE_PROCESS, exe)
    forge(core, NT_RCORE_MAPPINGS, mapped)
    assert_refused(restart_as_root(procs, core, pid), pid, "set-user-ID")


def test_restore_into_a_process_the_owner_may_not_change_refused(procs, user, home):
    """A user's core restored into root's process of the same program."""
    exe = built(home, "restore_ticker", "-ldl")
    mine = start_as_user(procs, user, home, [exe])
    core = os.path.join(home, "core")
    dump_as_user(user, mine.pid, core)
    roots = procs.start([exe], cwd=home)
    wait_lines(roots.out_path, 2)
    maps = open(f"/proc/{roots.pid}/maps").read()
    r = rcore_cmd("restore", "--force", roots.pid, core)
    assert_refused(r, None, f"may not change process {roots.pid}", USER)
    assert open(f"/proc/{roots.pid}/maps").read() == maps
    assert "TracerPid:\t0" in open(f"/proc/{roots.pid}/status").read()


def test_restore_of_users_core_into_their_process(procs, user, home):
    """Root restores a user's unforged core into that user's process; a forged
    one claiming root is refused."""
    exe = built(home, "restore_ticker", "-ldl")
    p = start_as_user(procs, user, home, [exe])
    core = os.path.join(home, "core")
    dump_as_user(user, p.pid, core)
    wait_lines(p.out_path, len(read_lines(p.out_path)) + 2)
    r = rcore_cmd("restore", p.pid, core)
    assert r.returncode == 0, r.stderr
    forge(core, NT_RCORE_PROCESS, lambda obj: obj["creds"].update(uid=[0] * 4))
    assert_refused(rcore_cmd("restore", p.pid, core), None, "claims uid 0")
    n = len(read_lines(p.out_path))
    wait_lines(p.out_path, n + 2)


# --- identity of the files a core names ----------------------------------------

def _zero_mapped_file(lib):
    def edit(obj):
        obj["files"][lib].update(dev=0, size=0, mtime_ns=0)
    return edit


def _libc_path(core):
    from rcore.elf.reader import CoreFile
    with CoreFile(core) as c:
        return next(p for p in c.state.mapped_files if "/libc.so" in p)


@pytest.mark.parametrize("what", ["mapped file", "mapped file left out", "descriptor",
                                  "executable ctime"])
def test_zeroed_identity_fields_refused(procs, user, home, ticker, what):
    """A zero is not a wildcard: identity fields the core leaves out are a
    refusal, not a skipped comparison."""
    core, pid = users_core(procs, user, home, [ticker])
    if what == "mapped file":
        forge(core, NT_RCORE_MAPPINGS, _zero_mapped_file(_libc_path(core)))
        words = ["libc", "device missing"]
    elif what == "mapped file left out":
        lib = _libc_path(core)
        forge(core, NT_RCORE_MAPPINGS, lambda obj: obj["files"].pop(lib))
        words = [lib, "identity the core records"]
    elif what == "descriptor":
        readable = os.path.join(home, "readable")
        with open(readable, "w") as f:
            f.write("x\n")
        add_fd(core, 5, path=readable, **dict(identity_of(readable), inode=0, mtime_ns=0))
        words = ["fd 5"]
    else:
        forge(core, NT_RCORE_PROCESS, lambda obj: obj["exe"].update(ctime_ns=0))
        words = ["executable", "ctime missing"]
    assert_refused(restart_as_root(procs, core, pid), pid, *words)


def _rewrite_in_place(path, other):
    """Overwrite path's bytes with other's (same size), then put its mtime back,
    as a user who can write the file can."""
    st = os.stat(path)
    data = open(other, "rb").read()
    assert len(data) == st.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == \
        (st.st_ino, st.st_size, st.st_mtime_ns)


BUILD_A, BUILD_B = "-Wl,--build-id=0x" + "aa" * 20, "-Wl,--build-id=0x" + "bb" * 20


def test_executable_rewritten_in_place_refused_by_restart(procs, user, home):
    exe = built(home, "ticker", BUILD_A)
    other = built(home, "ticker-b", BUILD_B, src=os.path.join(PROGS, "ticker.c"))
    core, pid = users_core(procs, user, home, [exe])
    _rewrite_in_place(exe, other)
    assert_refused(restart_as_root(procs, core, pid), pid, exe, "ctime", "build-id")


def test_library_rewritten_in_place_refused_by_restore(procs, user, home):
    src = os.path.join(PROGS, "restore_lib.c")
    lib = built(home, "librestore.so", "-shared", "-fPIC", BUILD_A, src=src)
    other = built(home, "librestore-b.so", "-shared", "-fPIC", BUILD_B, src=src)
    exe = built(home, "restore_ticker", "-ldl")
    p = start_as_user(procs, user, home, [exe, lib])
    core = os.path.join(home, "core")
    dump_as_user(user, p.pid, core)
    _rewrite_in_place(lib, other)
    r = rcore_cmd("restore", p.pid, core)
    assert_refused(r, None, lib, "ctime", "build-id")
    assert "TracerPid:\t0" in open(f"/proc/{p.pid}/status").read()
    n = len(read_lines(p.out_path))
    wait_lines(p.out_path, n + 2)


def test_user_cannot_use_another_users_core(procs, user, home, ticker):
    """Without root, rcore already runs everything with the caller's own rights;
    a core of another user (here with credentials edited to match the caller)
    still does not speak for the caller."""
    core, pid = users_core(procs, user, home, [ticker])
    forge(core, NT_RCORE_PROCESS, lambda obj: obj["creds"].update(
        uid=[65534] * 4, gid=[65534] * 4, groups=[]))
    os.chmod(core, 0o644)
    os.chmod(os.path.join(home, "out.0"), 0o666)    # nothing else stops the caller
    procs.adopt(pid)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        PYTHON, "-m", "rcore", "restart", "--detach", "--any-pid", core],
                       env=dict(os.environ, PYTHONPATH=SRC), capture_output=True, text=True,
                       timeout=60, cwd=home)
    for started in r.stdout.split():
        procs.adopt(int(started))
    assert_refused(r, pid, f"belongs to uid {user.pw_uid}")
    assert r.stdout == ""


def test_lazy_restart_maps_only_the_core_rcore_read(build, procs, tmp_path, monkeypatch):
    """--lazy has the process open the core by its path: a file renamed over it
    after rcore read it (whoever may write that directory) is not mapped; the
    memory is written from the core rcore checked instead."""
    restart_module = importlib.import_module("rcore.restart")  # rcore.restart: the function
    p = procs.start([build("ticker"), "8"])
    wait_lines(p.out_path, 2)
    core = str(tmp_path / "core")
    checkpoint_and_kill(p, core)
    other = shutil.copy(core, str(tmp_path / "other"))

    class RenamedOver(restart_module.CoreFile):
        def __init__(self, path):
            super().__init__(path)
            os.rename(other, path)
    monkeypatch.setattr(restart_module, "CoreFile", RenamedOver)
    out = str(tmp_path / "out2")
    h = restart(procs, core, lazy=True, stdout=out)
    inode = str(os.stat(core).st_ino)
    maps = open(f"/proc/{h.pid}/maps").read().splitlines()
    assert not [line for line in maps if line.split()[4] == inode]
    assert any("path names another file" in w for w in h.warnings), h.warnings
    wait_lines(out, 2)
