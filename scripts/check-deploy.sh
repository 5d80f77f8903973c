#!/usr/bin/env bash
# Checks deploy/ offline, as CI does (.ci/run): renders every kustomization
# (scripts/deploy/render.py), validates the result against the Kubernetes, KEDA and
# Prometheus-operator schemas (npm kubernetes-models, installed into ./.tools), and
# checks the Prometheus alert rules with promtool (from Debian's prometheus package,
# unpacked into ./.tools: the package itself would install a server). The Rust test
# tests/tests/deploy_manifests.rs asserts what schemas cannot (grace period, probes,
# settings, sizes, metric names). Every step installs what it needs, idempotently.
# Usage: scripts/check-deploy.sh [render|validate|rules|all]   (default all)
set -euo pipefail
cd "$(dirname "$0")/.."

# ./.tools may be a symlink to another checkout's (worktrees share one): follow it.
TOOLS="${DEPLOY_TOOLS:-$PWD/.tools}"
mkdir -p "$(readlink -m "$TOOLS")"
VALIDATOR_DIR="$TOOLS/deploy-validate"
# Pinned: the schemas are the packages' (Kubernetes 1.3x, KEDA 2.x, prometheus-operator).
VALIDATOR_PACKAGES=(kubernetes-models@5.1.0 @kubernetes-models/keda@2.0.0 @kubernetes-models/prometheus-operator@6.0.0)
RENDERED="$PWD/target/deploy"
KUSTOMIZATIONS=(overlays/keda overlays/hpa monitoring)

ensure_pyyaml() {
  python3 -c "import yaml" 2>/dev/null || python3 -m pip install -q pyyaml
}

ensure_node() {
  command -v node >/dev/null && command -v npm >/dev/null && return 0
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
}

ensure_validator() {
  local stamp="$VALIDATOR_DIR/.installed"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${VALIDATOR_PACKAGES[*]}" ]; then return 0; fi
  ensure_node
  echo "check-deploy: installing ${VALIDATOR_PACKAGES[*]} into $VALIDATOR_DIR" >&2
  mkdir -p "$VALIDATOR_DIR"
  npm install --prefix "$VALIDATOR_DIR" --no-audit --no-fund --loglevel=error "${VALIDATOR_PACKAGES[@]}" >&2
  echo "${VALIDATOR_PACKAGES[*]}" >"$stamp"
}

promtool_bin() { echo "$TOOLS/prometheus/usr/bin/promtool"; }

ensure_promtool() {
  [ -x "$(promtool_bin)" ] && return 0
  echo "check-deploy: unpacking promtool from Debian's prometheus package into $TOOLS/prometheus" >&2
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }; })
  mkdir -p "$TOOLS/prometheus"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$TOOLS/prometheus"
  rm -rf "$tmp"
  [ -x "$(promtool_bin)" ]
}

render() {
  ensure_pyyaml
  mkdir -p "$RENDERED"
  local k
  for k in "${KUSTOMIZATIONS[@]}"; do
    python3 scripts/deploy/render.py "deploy/kubernetes/$k" >"$RENDERED/$(basename "$k").json"
  done
  echo "check-deploy: rendered ${KUSTOMIZATIONS[*]} into target/deploy/"
}

validate() {
  render
  ensure_validator
  # ESM packages resolve from the importing file's directory: run the script from there.
  cp scripts/deploy/validate.mjs "$VALIDATOR_DIR/validate.mjs"
  node "$VALIDATOR_DIR/validate.mjs" "$RENDERED"/*.json
}

rules() {
  ensure_promtool
  "$(promtool_bin)" check rules deploy/prometheus/alerts.yml
  "$(promtool_bin)" test rules deploy/prometheus/alerts.test.yml
}

case "${1:-all}" in
  render) render ;;
  validate) validate ;;
  rules) rules ;;
  all) validate && rules ;;
  *) echo "usage: $0 [render|validate|rules|all]" >&2; exit 2 ;;
esac
