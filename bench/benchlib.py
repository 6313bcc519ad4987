"""What the benchmark scripts share."""

import os
import signal


def end_process(p):
    """End Popen p by its PID (SIGCONT first, in case a dump left it stopped)."""
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            break
    p.wait()
