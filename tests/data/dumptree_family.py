"""A small process tree for rcore's tree dump tests (tests/test_tree_dump.py).

root -- a (pdeath signal 9, own process group, a second thread) -- b (own session)
     -- z (exited with status 3: a zombie)
     -- c (cloned with exit signal 0)
The root holds a pipe with bytes queued in it and a file; a and b inherit both.
Prints "root a b z c" once all exist, then every process sleeps.  Optional second
argument: MiB of memory each live process fills (its own, after the forks).

usage: dumptree_family.py HELD_FILE [MIB]"""
import ctypes
import os
import sys
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)
MIB = int(sys.argv[2]) if len(sys.argv) > 2 else 0


def sleep_forever():
    held = bytes([0x5A]) * (MIB << 20)      # touched: every page stored
    while held:
        time.sleep(1)
    while True:
        time.sleep(1)


r, w = os.pipe()
os.write(w, b"queued once")
f = open(sys.argv[1], "w")
f.write("x")
f.flush()
up_r, up_w = os.pipe()
a = os.fork()
if a == 0:
    libc.prctl(1, 9)                       # PR_SET_PDEATHSIG
    os.setpgid(0, 0)
    threading.Thread(target=sleep_forever, daemon=True).start()
    b = os.fork()
    if b == 0:
        os.setsid()
        os.write(up_w, b"b")
        sleep_forever()
    sleep_forever()
z = os.fork()
if z == 0:
    os._exit(3)
c = libc.syscall(56, 0, 0, 0, 0, 0)         # clone(flags=0): exit signal 0
if c == 0:
    sleep_forever()
os.read(up_r, 1)
while not open(f"/proc/{z}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
    time.sleep(0.01)
b = int(open(f"/proc/{a}/task/{a}/children").read().split()[0])
print(os.getpid(), a, b, z, c, flush=True)
sleep_forever()
