# Sourced by scripts/services.sh: Azurite, the Azure Blob emulator the Azure storage tests
# talk to. It validates service SAS and user delegation SAS signatures for real. Only
# installed here (./.tools/azurite); the tests start their own instances on free ports
# (one plain-HTTP, one HTTPS with --oauth basic and a certificate they make).
# Idempotent.

AZURITE_VERSION="${AZURITE_VERSION:-3.37.0}"
AZURITE_DIR="${AZURITE_DIR:-./.tools/azurite}"

# The azurite-blob to run: ./.tools/azurite (installed by npm), then one on PATH.
azurite_bin() {
  local local_bin="$AZURITE_DIR/node_modules/.bin/azurite-blob"
  [ -x "$local_bin" ] && { echo "$local_bin"; return 0; }
  command -v azurite-blob && return 0
  return 1
}

ensure_azurite() {
  # The HTTPS instance's certificates are made by the tests with the openssl command.
  command -v openssl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl; } || return 1
  azurite_bin >/dev/null && return 0
  command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; } || return 1
  echo "services: installing azurite $AZURITE_VERSION into $AZURITE_DIR" >&2
  mkdir -p "$AZURITE_DIR"
  npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >&2 || return 1
  azurite_bin >/dev/null
}
