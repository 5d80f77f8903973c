#!/usr/bin/env bash
# Per-file budgets of the probe (issue 9): every file under the given directories (default
# fixtures/assets, plus the hostile sets the generators make) probed one at a time in its
# own process, wall time and peak RSS from /usr/bin/time; then the same files through
# `metadata-worker probe` (probe processes, as the worker runs them), which must print
# exactly one line per file. Prints the files over 2 s (of CPU: wall time on this shared
# 2-core machine depends on what else runs) or 64 MiB (none is the goal) and the worst of
# each. Usage: scripts/bench-budgets.sh [DIR...]
#   Hostile sets: python3 fixtures/scripts/make-hostile-containers.py --big DIR
#                 python3 fixtures/scripts/make-hostile-dicom-pdf.py big DIR
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p asset-probe --example probe_one
cargo build --release -q -p metadata-worker
dirs=("$@")
[ ${#dirs[@]} -gt 0 ] || dirs=(fixtures/assets)
list=$(mktemp)
trap 'rm -f "$list"' EXIT
find "${dirs[@]}" -type f ! -name '*.md' | sort >"$list"
n=$(wc -l <"$list")
over=0 worst_t=0 worst_m=0 worst_tf="" worst_mf=""
echo "| file | CPU s | wall s | peak RSS MiB | answer |"
echo "|---|---:|---:|---:|---|"
while IFS= read -r f; do
  /usr/bin/time -o /tmp/budget-time -f "%U %S %e %M" target/release/examples/probe_one "$f" \
    >/tmp/budget-line 2>/dev/null || true
  read -r u sy wall kb </tmp/budget-time
  t=$(awk "BEGIN {print $u + $sy}"); m=$(( kb / 1024 ))
  answer=$(sed -e 's/.*"code":"\([a-z_]*\)".*/\1/' -e 's/.*"metadata".*/ok/' /tmp/budget-line | head -c 40)
  if awk "BEGIN {exit !($t > 2.0)}" || [ "$m" -gt 64 ]; then
    over=$((over + 1)); echo "| $f | $t | $wall | $m | $answer |"
  fi
  awk "BEGIN {exit !($t > $worst_t)}" && { worst_t=$t; worst_tf=$f; }
  [ "$m" -gt "$worst_m" ] && { worst_m=$m; worst_mf=$f; }
done <"$list"
echo
echo "$n files, $over over 2 CPU-s or 64 MiB; slowest $worst_t CPU-s ($worst_tf); largest $worst_m MiB ($worst_mf)"
lines=$(xargs -d '\n' target/release/metadata-worker probe <"$list" | wc -l)
echo "metadata-worker probe: $lines lines for $n files"
[ "$lines" -eq "$n" ]
