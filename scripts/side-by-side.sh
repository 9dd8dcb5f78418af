#!/usr/bin/env bash
# Run make targets side by side: the first in the foreground (its output
# streams), the others in the background with their output kept in
# .cache/<target>.log and printed, with their times, once all have ended.
# Exits non-zero if any target failed, naming each one that did.
#
#   scripts/side-by-side.sh unit molecule pxe-tests
set -uo pipefail
cd "$(dirname "$0")/.."
(($# >= 1)) || { echo "usage: $0 TARGET [TARGET ...]" >&2; exit 2; }
mkdir -p .cache
MAKE=${MAKE:-make}

declare -A pids
for target in "${@:2}"; do
  # The time line ends the target's own log, so it is printed with it.
  (
    begun=$(date +%s)
    "${MAKE}" --no-print-directory "${target}"
    rc=$?
    echo "side-by-side: ${target} took $(($(date +%s) - begun)) s (beside $1)"
    exit "${rc}"
  ) > ".cache/${target}.log" 2>&1 &
  pids[$target]=$!
done

failed=()
start=$(date +%s)
# The foreground target streams and is kept in its log too, so the summary
# at the end can name what failed in it.
"${MAKE}" --no-print-directory "$1" 2>&1 | tee ".cache/$1.log"
((PIPESTATUS[0] == 0)) || failed+=("$1")
echo "side-by-side: $1 took $(($(date +%s) - start)) s"

for target in "${@:2}"; do
  wait "${pids[$target]}" || failed+=("${target}")
  echo "=== make ${target} (ran beside $1; log .cache/${target}.log)"
  cat ".cache/${target}.log"
done

if ((${#failed[@]})); then
  # The end of a CI log is what gets read: repeat what failed there.
  for target in "${failed[@]}"; do
    echo "=== what failed in make ${target} (.cache/${target}.log)"
    grep -E '^(FAILED|ERROR) |Fatal Python error|File "[^"]*/test_[^"]*[.]py", line [0-9]+ in test_|^=+ .*(failed|error).* =+$|^make(\[[0-9]+\])?: \*\*\*' ".cache/${target}.log" | tail -n 40
  done
  echo "side-by-side: failed: ${failed[*]}" >&2
  exit 1
fi
