"""A multiprocessing Pool(2).map over a long computation, for the process-tree
tests: prints every result, then "done".  Each task leaves a file named after it
in the directory argv[1] when it starts, so that the test can checkpoint midway."""

import hashlib
import multiprocessing
import os
import sys


def work(n):
    open(os.path.join(sys.argv[1], f"task{n}"), "w").close()
    digest = str(n).encode()
    for _ in range(400000):
        digest = hashlib.sha256(digest).digest()
    return n, digest.hex()


if __name__ == "__main__":
    with multiprocessing.Pool(2) as pool:
        for n, digest in pool.map(work, range(24), chunksize=1):
            print(n, digest, flush=True)
    print("done")
