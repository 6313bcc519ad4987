"""Keeping Ctrl-C and termination signals out of critical sections.

While a target's threads run on registers rcore borrowed, or a new process is half
built, an exception in the middle would leave it in no state at all; the signals
wait instead, and act as soon as the section is over (cli.py turns them into an
unwind that runs every cleanup)."""

import signal
from contextlib import contextmanager

HELD = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}


@contextmanager
def signals_held():
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
