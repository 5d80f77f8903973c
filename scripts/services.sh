# Sourced by scripts/test.sh and .ci/run: starts the local services the integration
# tests need (RabbitMQ, PostgreSQL) when they are down. Every function is idempotent.

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds
  local i
  for ((i = 0; i < $2 * 4; i++)); do port_open "$1" && return 0; sleep 0.25; done
  return 1
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  echo "services: starting RabbitMQ" >&2
  command -v rabbitmq-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server; }
  rabbitmq-server -detached || true
  wait_port 5672 60
}

ensure_postgres() {
  port_open 5432 && return 0
  echo "services: starting PostgreSQL" >&2
  command -v pg_ctlcluster >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  wait_port 5432 60
}

# moto (STS/IAM/S3) and s3s-fs for the storage tests.
source "$(dirname "${BASH_SOURCE[0]}")/s3-servers.sh"
# Google's reference signer and a GCS emulator for the GCS storage tests.
source "$(dirname "${BASH_SOURCE[0]}")/gcs-tools.sh"
# Azurite (Azure Blob emulator) for the Azure storage tests.
source "$(dirname "${BASH_SOURCE[0]}")/azure-servers.sh"

ensure_services() {
  local failed=0
  ensure_rabbitmq || { echo "services: RabbitMQ is not reachable on 127.0.0.1:5672" >&2; failed=1; }
  ensure_postgres || { echo "services: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; failed=1; }
  ensure_moto || { echo "services: moto is not reachable on 127.0.0.1:$MOTO_PORT" >&2; failed=1; }
  ensure_s3s || { echo "services: s3s-fs could not be installed into ./.tools" >&2; failed=1; }
  ensure_gcs_tools || { echo "services: the GCS test tools could not be installed (PyPI)" >&2; failed=1; }
  ensure_azurite || { echo "services: azurite could not be installed into ./.tools/azurite" >&2; failed=1; }
  if [ "$failed" = 1 ] && [ "${CI:-}" = "true" ]; then
    echo "services: a service the tests need is down, and CI does not skip" >&2
    return 1
  fi
}
