#!/bin/bash
# A shell job for the process-tree tests (tests/test_tree_programs.py): pipelines
# and files written step by step in the current directory; a checkpoint and
# restart while the first pipeline runs must leave the same files as a run
# without one.  log says how far it got.
set -euo pipefail
echo started > log
seq 1 30000000 | awk '{s+=$1} END {print s}' | sha256sum > out
echo "sum done" >> log
seq 1 3000000 | awk '$1 % 7 == 3' | tail -n 3 > tail7
sort -r tail7 | tr '0-9' 'a-j' > letters
for f in out tail7 letters; do wc -c < "$f"; done > sizes
echo finished >> log
