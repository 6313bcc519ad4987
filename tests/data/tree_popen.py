"""subprocess.Popen with pipes, for the process-tree tests: streams generated
lines into `sha256sum` (writing its stdin, then reading its stdout), then sorts
lines through `sort -n` with communicate(); prints both results.  "feeding" says
the first child is being fed, so that the test can checkpoint midway."""

import hashlib
import subprocess


def lines(count, step):
    return "".join(f"{i * step % 1000003:07d} {i}\n" for i in range(count)).encode()


if __name__ == "__main__":
    feed = subprocess.Popen(["sha256sum"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    print("feeding", flush=True)
    for block in range(300):
        feed.stdin.write(lines(20000, 7919 + block))
    feed.stdin.close()
    print("sha256sum", feed.stdout.read().decode().split()[0], flush=True)
    print("sha256sum exit", feed.wait(), flush=True)

    sorter = subprocess.Popen(["sort", "-n"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = sorter.communicate(lines(300000, 104729))
    print("sorted", hashlib.sha256(out).hexdigest(), out.splitlines()[-1].decode())
    print("sort exit", sorter.wait())
