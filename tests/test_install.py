"""The installed `rcore` command: pip installs the launcher (scripts/rcore and
scripts/rcore-python) for an editable install, as .ci/run does, and for a
normal one; it runs rcore without `site`, so that no .pth file of another
package runs at its start.  Each install goes into a new venv (with the
system's site-packages, as a global install sees them)."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

# A .pth file that leaves a mark when site runs it.
MARKER_PTH = ('import os; "RCORE_TEST_PTH_MARK" in os.environ and '
              'open(os.environ["RCORE_TEST_PTH_MARK"], "a").write("ran\\n")\n')


def _venv_with_rcore(path, *install_args):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(path)], check=True)
    python = str(path / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--no-deps", *install_args], check=True, timeout=600)
    site_packages = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"],
                                   check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site_packages, "zz_rcore_test_marker.pth"), "w") as f:
        f.write(MARKER_PTH)
    return path / "bin"


@pytest.fixture(scope="module")
def editable(tmp_path_factory):
    return _venv_with_rcore(tmp_path_factory.mktemp("editable"), "-e", ROOT)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    # From a copy of the project, so that the build leaves nothing in the worktree.
    copy = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), copy)
    for name in ("src", "scripts"):
        shutil.copytree(os.path.join(ROOT, name), copy / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return _venv_with_rcore(tmp_path_factory.mktemp("installed"), str(copy))


def _run(command, tmp_path, *args, cwd=None):
    """Runs an installed command; returns (CompletedProcess, whether a .pth file ran)."""
    mark = tmp_path / "pth-ran"
    env = dict(os.environ, RCORE_TEST_PTH_MARK=str(mark))
    env.pop("PYTHONPATH", None)
    r = subprocess.run([str(command), *map(str, args)], env=env, capture_output=True,
                       text=True, timeout=60, cwd=cwd or tmp_path)
    ran = mark.exists()
    if ran:
        mark.unlink()
    return r, ran


def _sleep_core(procs, tmp_path):
    p = procs.start(["sleep", "1000"])
    core = tmp_path / "sleep.core"
    import rcore
    rcore.dump(p.pid, str(core))
    return p, core


@pytest.mark.parametrize("install", ["editable", "installed"])
def test_launcher_runs_rcore_without_site(install, request, procs, tmp_path):
    bin_dir = request.getfixturevalue(install)
    r, pth_ran = _run(bin_dir / "rcore", tmp_path, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: rcore")
    assert "dump" in r.stdout and "restart" in r.stdout
    assert not pth_ran, "the launcher ran site's .pth files"

    p, core = _sleep_core(procs, tmp_path)
    r, pth_ran = _run(bin_dir / "rcore", tmp_path, "info", core)
    assert r.returncode == 0, r.stderr
    assert f"pid:      {p.pid}" in r.stdout and "/sleep" in r.stdout
    assert not pth_ran

    # The same command started the usual way runs the .pth files: the mark works.
    r, pth_ran = _run(bin_dir / "rcore-python", tmp_path, "info", core)
    assert r.returncode == 0, r.stderr
    assert f"pid:      {p.pid}" in r.stdout
    assert pth_ran


def test_launcher_through_a_link_and_errors(editable, tmp_path):
    """A link to the launcher (pipx links commands into ~/.local/bin) finds the
    interpreter beside the file it names; errors keep rcore's exit codes."""
    link = tmp_path / "bin" / "rcore"
    link.parent.mkdir()
    link.symlink_to(editable / "rcore")
    r, _ = _run(link, tmp_path, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: rcore")

    r, _ = _run(link, tmp_path, "info", tmp_path / "missing.core")
    assert r.returncode != 0
    assert r.stderr.startswith("rcore: ") and "missing.core" in r.stderr
    assert "Traceback" not in r.stderr

    r, _ = _run(link, tmp_path, "no-such-command")
    assert r.returncode == 2 and "invalid choice" in r.stderr
