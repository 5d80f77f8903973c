#!/usr/bin/env bash
# The project's one test command (README, CI): brings up what the tests talk to, then
# runs every test. On a bare machine it installs what is missing; with CI=true a service
# that cannot be started fails the run instead of letting tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/services.sh
ensure_services

cargo test --workspace --all-targets "$@"
