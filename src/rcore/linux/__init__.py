"""Thin layers over Linux interfaces: libc calls, ptrace, system call injection,
/proc reading."""
