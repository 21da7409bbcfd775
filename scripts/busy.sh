#!/usr/bin/env bash
# Run a command beside busy-loop processes, each pinned to a core, as on a shared CI machine:
#   scripts/busy.sh [-n N] COMMAND...   (N busy loops, default 2; pinned with taskset where it exists)
# The loops end with the command, whatever its outcome; the command's exit code is returned.
set -euo pipefail
n=2
if [ "${1:-}" = "-n" ]; then n=$2; shift 2; fi
cores=$(nproc 2>/dev/null || echo 1)
pids=()
cleanup() { [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
for ((i = 0; i < n; i++)); do
    if command -v taskset >/dev/null 2>&1; then
        taskset -c $((i % cores)) bash -c 'while :; do :; done' &
    else
        bash -c 'while :; do :; done' &
    fi
    pids+=($!)
done
echo "busy.sh: $n busy loops beside: $*" >&2
start=$(date +%s)
status=0
"$@" || status=$?
echo "busy.sh: exit $status after $(( $(date +%s) - start ))s beside $n busy loops" >&2
exit $status
