#!/usr/bin/env bash
# Every benchmark of the project, peers measured in the same run: the probe beside
# exiftool, mediainfo and ffprobe (scripts/bench-probe.sh), then the pipeline end to end
# (scripts/bench-pipeline.sh). Installs what it needs; prints Markdown tables.
# Usage: scripts/bench.sh   (BENCHMARKS.md says what it printed last and where)
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# Benchmarks ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(git rev-parse --short HEAD))"
echo
scripts/bench-probe.sh
echo
scripts/bench-pipeline.sh
echo
scripts/bench-memory.sh
