# Sourced by scripts/services.sh: the S3/STS servers the storage tests talk to.
#   moto    STS, IAM and S3 with IAM policy enforcement, on 127.0.0.1:5000 (one shared
#           instance; tests reset its auth switch themselves).
#   s3s-fs  an S3 server on a directory that validates SigV4 and presigned URLs; only
#           installed here (./.tools/bin), the tests start their own instances on free
#           ports with the key pairs they need.
# Both are reused when already installed or running. Every function is idempotent.

MOTO_PORT="${MOTO_PORT:-5000}"

if ! declare -F port_open >/dev/null; then
  port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
  wait_port() { # port seconds
    local i
    for ((i = 0; i < $2 * 4; i++)); do port_open "$1" && return 0; sleep 0.25; done
    return 1
  }
fi

# The moto_server to run: an existing venv of ours, then one on PATH, else a new venv.
moto_bin() {
  local venv
  for venv in ./.venv "$HOME/.cache/asset-metadata/venv"; do
    [ -x "$venv/bin/moto_server" ] && { echo "$venv/bin/moto_server"; return 0; }
  done
  command -v moto_server && return 0
  venv=./.venv
  [ -w . ] || venv="$HOME/.cache/asset-metadata/venv"
  echo "services: installing moto[server] into $venv" >&2
  python3 -m venv "$venv" >&2 && "$venv/bin/pip" install -q 'moto[server]' >&2 || return 1
  echo "$venv/bin/moto_server"
}

# moto's server answers every request with permissive CORS headers of its own unless
# MOTO_DISABLE_GLOBAL_CORS is set; validate-storage's CORS check needs S3's behaviour
# (the bucket's rules), so a moto running with them on is refused, not used.
moto_global_cors() {
  local reply
  reply="$(exec 3<>"/dev/tcp/127.0.0.1/$MOTO_PORT" && printf 'OPTIONS /moto-cors-probe HTTP/1.0\r\nHost: 127.0.0.1\r\nOrigin: https://probe.invalid\r\nAccess-Control-Request-Method: GET\r\n\r\n' >&3 && timeout 5 cat <&3)" || return 1
  grep -qi '^access-control-allow-origin' <<<"$reply"
}

ensure_moto() {
  if port_open "$MOTO_PORT"; then
    if moto_global_cors; then
      echo "services: the moto on 127.0.0.1:$MOTO_PORT runs with its global CORS on; stop it (this script restarts it with MOTO_DISABLE_GLOBAL_CORS=true)" >&2
      return 1
    fi
    return 0
  fi
  local bin
  bin="$(moto_bin)" || return 1
  echo "services: starting moto on 127.0.0.1:$MOTO_PORT" >&2
  MOTO_DISABLE_GLOBAL_CORS=true nohup "$bin" -H 127.0.0.1 -p "$MOTO_PORT" >"${TMPDIR:-/tmp}/moto-$MOTO_PORT.log" 2>&1 &
  wait_port "$MOTO_PORT" 60
}

# Newer s3s-fs releases need a newer rustc than the workspace's; the binary sits behind
# the `binary` feature.
ensure_s3s() {
  [ -x ./.tools/bin/s3s-fs ] && return 0
  command -v s3s-fs >/dev/null && return 0
  echo "services: installing s3s-fs 0.14.1 into ./.tools (a few minutes)" >&2
  cargo install s3s-fs --version 0.14.1 --locked --features binary --root ./.tools
}
