#!/usr/bin/env bash
# Peak memory of one replica under the largest messages it accepts (issue 8): PREFETCH
# (16) jobs of MAX_JOB_BYTES (4 MiB) in flight, then a 53 MB message over the limit.
# Builds the worker in release; BASELINE_BIN=path measures another build in the same run.
# Prints a Markdown table. Usage: scripts/bench-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_services >&2
cargo build --release -q -p metadata-worker
METADATA_WORKER_BIN="$PWD/target/release/metadata-worker" \
  cargo bench -q -p pipeline-tests --bench message_memory
