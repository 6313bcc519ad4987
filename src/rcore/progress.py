"""A one-line progress bar on a terminal; nothing at all otherwise."""

import sys
import time


class Progress:
    def __init__(self, label, stream=None, min_interval=0.1):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.label = label
        self.last = 0.0
        self.min_interval = min_interval
        self.shown = False

    def __call__(self, done, total):
        if not self.enabled or not total:
            return
        now = time.monotonic()
        if now - self.last < self.min_interval and done < total:
            return
        self.last = now
        width = 30
        filled = int(width * done / total)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{done >> 20}/{total >> 20} MiB")
        self.stream.flush()
        self.shown = True

    def finish(self):
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False
