#!/usr/bin/env bash
# Generates the bulk benchmark set (issue 5): ~N mixed files (default 2000) plus a few
# large ones (>= 10 MB), with OUTDIR/manifest.jsonl holding the true values of each.
# Deterministic; reused when OUTDIR/.stamp matches N and the generator. Not committed.
# Usage: scripts/bench/make-bulk-set.sh [OUTDIR] [N]   (default OUTDIR: target/bulk-set)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:-$root/target/bulk-set}"
n="${2:-2000}"
gen="$root/scripts/bench/make_bulk_set.py"

stamp="n=$n gen=$(sha256sum "$gen" | cut -c1-16)"
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ]; then
  echo "bulk set up to date: $out ($(wc -l <"$out/manifest.jsonl") files)" >&2
  exit 0
fi

# Encoders: ffmpeg (libx264, libvpx, libmp3lame, libvorbis, libopus, libwebp), exiftool
# for EXIF orientation. DICOM, PDF and text are written by the generator itself.
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v exiftool >/dev/null || need+=(libimage-exiftool-perl)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

case "$out" in /|"$root"|"$HOME") echo "refusing to clear $out" >&2; exit 2 ;; esac
rm -rf "$out"
mkdir -p "$out"
start=$(date +%s)
python3 "$gen" "$out" "$n"
echo "$stamp" >"$out/.stamp"
echo "generated $out in $(($(date +%s) - start)) s ($(du -sh --apparent-size "$out" | cut -f1))" >&2
