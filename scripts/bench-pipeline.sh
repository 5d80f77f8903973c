#!/usr/bin/env bash
# The end-to-end pipeline benchmark (issue 5, parts 2 and 3), on loopback: import jobs of
# ~20 assets through RabbitMQ, presigned (ranged or full) downloads from s3s-fs, the probe,
# results into PostgreSQL and JSONL; 1 and 2 worker replicas, FETCH_MODE=ranged and full.
# Then a delegated integration (STS AssumeRole on moto) to count STS calls. Prints
# Markdown tables (A per run, B bytes per data type ranged vs full, C STS calls).
# Starts the services it needs (scripts/services.sh), builds the worker, reuses the bulk
# set (scripts/bench/make-bulk-set.sh) and adds two 4 GiB sparse MP4s (ranged runs only).
# Work files under target/bench-pipeline (re-created on each run).
# Caveat measured on s3s-fs 0.14.1: a request on a reused keep-alive connection often
# answers after ~40 ms (delayed ACK against a Nagle-delayed write; curl shows the same on
# its 2nd+ request), so per-asset latency has that floor here and one replica is
# latency-bound (CONCURRENCY / 43 ms); raise BENCH_CONCURRENCY to see CPU-bound figures.
# Usage: scripts/bench-pipeline.sh
# Env: BENCH_REPLICAS=1,2  BENCH_MODES=ranged,full  BENCH_CONCURRENCY=4 (per replica)
#      BENCH_STS_ASSETS=100 (0 skips the delegated run)  BULK_DIR  BENCH_MOTO_ENFORCE=1
set -euo pipefail
cd "$(dirname "$0")/.."

work="$PWD/target/bench-pipeline"
bulk="${BULK_DIR:-$PWD/target/bulk-set}"
py_pid=""
cleanup() {
  # The Python driver stops every process it started on SIGTERM; this is the backstop.
  if [ -n "$py_pid" ] && kill -0 "$py_pid" 2>/dev/null; then
    kill -TERM "$py_pid" 2>/dev/null || true
    wait "$py_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

source scripts/services.sh
ensure_services >&2
command -v psql >/dev/null || { echo "psql is needed" >&2; exit 1; }
command -v rabbitmqctl >/dev/null || { echo "rabbitmqctl is needed" >&2; exit 1; }
s3s="${S3S_FS:-$PWD/.tools/bin/s3s-fs}"
[ -x "$s3s" ] || s3s="$(command -v s3s-fs)"
python=python3
[ -x ./.venv/bin/python ] && python=./.venv/bin/python
"$python" -c 'import boto3' 2>/dev/null || { echo "boto3 is needed for the delegated run (./.venv or python3)" >&2; exit 1; }

cargo build -q --release -p metadata-worker >&2
bin="$PWD/target/release/metadata-worker"
scripts/bench/make-bulk-set.sh "$bulk" >&2

mkdir -p "$work"
src=$(ls fixtures/assets/video/faststart.mp4 2>/dev/null || ls fixtures/assets/video/*.mp4 | head -1)
mapfile -t sparse < <(python3 scripts/bench/make-sparse-video.py "$src" "$work/sparse" 4)

mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
echo "## Pipeline benchmark, end to end on loopback"
echo
echo "Machine: $(nproc) CPUs ($cpu), $mem RAM, $(uname -sr). $(date -u +%Y-%m-%dT%H:%M:%SZ)," \
  "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates workers 2>/dev/null || echo ' (worker sources modified)')."
echo "RabbitMQ, PostgreSQL, s3s-fs and moto on the same machine; CONCURRENCY=${BENCH_CONCURRENCY:-4} per replica," \
  "jobs of ${BENCH_JOB_SIZE:-20} assets; bulk set $(wc -l <"$bulk/manifest.jsonl") files" \
  "($(du -sh --apparent-size "$bulk" | cut -f1)), plus 2 × 4 GiB sparse MP4s in ranged runs only."
echo "Latency is the worker's per-asset timings_ms.total (fetch + probe, from the JSONL sink);" \
  "wall time runs from the first publish to the last row's updated_at in PostgreSQL."
echo

"$python" scripts/bench/pipeline.py --bin "$bin" --bulk "$bulk" --work "$work" --s3s "$s3s" \
  --sparse "${sparse[@]}" &
py_pid=$!
wait "$py_pid"
py_pid=""
