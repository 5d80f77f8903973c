#!/usr/bin/env bash
# Throughput under real latency (issue 12): one worker replica against s3s-fs behind a
# proxy that adds BENCH_LATENCY_MS (default 30) to every request, at each CONCURRENCY of
# BENCH_CONCURRENCY_LIST (default 4,16,64,256), beside the ideal
# CONCURRENCY / (requests per asset × latency), with peak RSS and CPU. It first measures
# the stand-in's floor (no added latency, straight to s3s-fs and through the proxy):
# s3s-fs answers many kept-alive requests ~40 ms late (Nagle on its split head/body
# writes against the client's delayed ACK), which the proxy removes with TCP_QUICKACK
# (scripts/bench/latency_proxy.py says how). Prints Markdown tables.
# Starts the services it needs (scripts/services.sh) and builds the release worker.
# Work files under target/bench-latency (re-created on each run).
# Usage: scripts/bench-latency.sh
# Env: BENCH_LATENCY_MS=30  BENCH_CONCURRENCY_LIST=4,16,64,256  BENCH_ASSETS=800  BENCH_JOB_SIZE=20
#      BENCH_BIN (a release metadata-worker to use instead of building one)
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/services.sh
ensure_services >&2
command -v psql >/dev/null || { echo "psql is needed" >&2; exit 1; }
command -v rabbitmqctl >/dev/null || { echo "rabbitmqctl is needed" >&2; exit 1; }
s3s="${S3S_FS:-$PWD/.tools/bin/s3s-fs}"
[ -x "$s3s" ] || s3s="$(command -v s3s-fs)"

# BENCH_BIN: a release binary built elsewhere (e.g. another target dir); else build it.
bin="${BENCH_BIN:-}"
if [ -z "$bin" ]; then
  cargo build -q --release -p metadata-worker >&2
  bin="$PWD/target/release/metadata-worker"
fi
work="$PWD/target/bench-latency"
rm -rf "$work"
mkdir -p "$work"

mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
echo "## Throughput under latency, one replica"
echo
echo "Machine: $(nproc) CPUs ($cpu), $mem RAM, $(uname -sr). $(date -u +%Y-%m-%dT%H:%M:%SZ)," \
  "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates workers 2>/dev/null || echo ' (worker sources modified)')."
echo "RabbitMQ, PostgreSQL, s3s-fs and the proxy on the same machine; FETCH_MODE=ranged; jobs of" \
  "${BENCH_JOB_SIZE:-20} assets; ${BENCH_ASSETS:-800} assets a run, at least 100 per unit of CONCURRENCY, half JPEG, half MP4 (fixtures, and 32 MiB" \
  "sparse MP4s with moov first and last). Requests per asset are those the proxy forwarded."
echo

exec python3 scripts/bench/latency.py --bin "$bin" --s3s "$s3s" --work "$work"
