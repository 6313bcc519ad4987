#!/usr/bin/env bash
# rcore's demo: start a sample program, checkpoint it, kill it, restart it from the
# core file, and watch it go on counting from where the checkpoint was taken.
# Needs root (same PID on restart) and gcc; gdb is used when present.
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
rcore() { python3 -m rcore "$@"; }

work=$(mktemp -d /tmp/rcore-demo.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

gcc -g -O1 -o "$work/counter" demo/counter.c
echo "== 1. start a sample program (counts 4 times a second, state on its heap)"
# (in a subshell that closes every descriptor above 2 it may have inherited: a
# restart rebuilds each open descriptor, and a pipe to some outside program can't be)
(
    for fd in /proc/$BASHPID/fd/*; do
        fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-"
    done
    exec "$work/counter" "$work/counter.log"
) < /dev/null > "$work/out.txt" 2>&1 &
pid=$!
sleep 1.6
tail -n 3 "$work/out.txt"

echo
echo "== 2. checkpoint it: rcore dump $pid (it keeps running)"
rcore dump "$pid" -o "$work/counter.core"
checkpoint=$(tail -n 1 "$work/out.txt")
echo "   last line before the checkpoint: $checkpoint"
sleep 1
echo
echo "== 3. what the core holds (rcore info), and gdb's backtrace from it"
rcore info "$work/counter.core" | head -n 12
if command -v gdb >/dev/null; then
    gdb -nx -batch -ex bt "$work/counter" "$work/counter.core" 2>/dev/null | grep '^#' | awk '!seen[$0]++'
fi

echo
echo "== 4. kill it (SIGKILL); it had counted on to: $(tail -n 1 "$work/out.txt")"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
pid=""

echo
echo "== 5. restart it from the core: same PID, memory, registers, files at their offsets"
newpid=$(rcore restart --detach "$work/counter.core")
pid=$newpid
sleep 2.5
echo "   restarted as PID $newpid. It went on from the checkpoint ($checkpoint),"
echo "   writing at stdout's checkpointed offset, and is now past where it was killed:"
tail -n 3 "$work/out.txt"
kill -9 "$pid"; pid=""
echo
echo "done: the restarted process continued counting from the checkpointed state."
