#!/usr/bin/env bash
# The probe benchmark (issues 2 and 5): throughput over the fixtures and a generated bulk
# set (scripts/bench/make-bulk-set.sh, under target/, not committed) beside exiftool,
# mediainfo and ffprobe measured in the same run, accuracy on the bulk set against the
# values it was generated with, then peak RSS of `metadata-worker probe` on hostile and
# huge inputs. Installs the peers from Debian if they are missing.
# Usage: scripts/bench-probe.sh [BULK_FILES]   (default 2000; BULK_DIR overrides the dir)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v exiftool >/dev/null || need+=(libimage-exiftool-perl)
command -v ffprobe >/dev/null || need+=(ffmpeg)
command -v mediainfo >/dev/null || need+=(mediainfo)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

bulk="${BULK_DIR:-$PWD/target/bulk-set}"
scripts/bench/make-bulk-set.sh "$bulk" "${1:-2000}"

echo "## Throughput (higher is better) and accuracy"
cargo bench -q -p asset-probe --bench throughput -- "$PWD/fixtures/assets" "$bulk"

echo
echo "## Peak RSS of one \`metadata-worker probe FILE\` process"
cargo build -q --release -p metadata-worker
bin=target/release/metadata-worker
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$(ls fixtures/assets/video/*faststart*.mp4 fixtures/assets/video/*.mp4 2>/dev/null | head -1 || true)
inputs=(fixtures/assets/bad/image-huge-declared.png)
if [ -n "$src" ]; then
  mapfile -t sparse < <(python3 scripts/bench/make-sparse-video.py "$src" "$work" 4)
  inputs+=("${sparse[@]}")
fi
echo "| file | size | result | peak RSS (MiB) |"
echo "|---|---:|---|---:|"
for f in "${inputs[@]}"; do
  [ -f "$f" ] || continue
  out=$(/usr/bin/time -f '%M' -o "$work/rss" "$bin" probe "$f")
  kib=$(cat "$work/rss")
  result=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["error"]["code"] if "error" in d else "%s %sx%s %ss" % (d.get("data_type"), d.get("width"), d.get("height"), d.get("duration_seconds")))' "$out")
  printf '| %s | %s | %s | %.1f |\n' "$(basename "$f")" "$(du -h --apparent-size "$f" | cut -f1)" "$result" "$(awk "BEGIN{print $kib/1024}")"
done
