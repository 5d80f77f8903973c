#!/usr/bin/env bash
# Checks docker-compose.yml and the Dockerfile by reading them (no Docker engine needed):
# the YAML parses; every service the README or the compose file's own comments name
# exists; depends_on points at real services; the worker can be scaled (no fixed host
# port, no container_name); every variable the worker is given is a setting the binary
# reads; the Dockerfile is multi-stage and runs as a non-root user.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -c "import yaml" 2>/dev/null || python3 -m pip install -q pyyaml

python3 - <<'PY'
import pathlib, re, sys
import yaml

errors = []
compose_text = pathlib.Path("docker-compose.yml").read_text()
compose = yaml.safe_load(compose_text)
services = compose.get("services") or {}
if not isinstance(services, dict) or not services:
    sys.exit("check-compose: docker-compose.yml has no services")

# Services the documentation names: the four the issue requires, plus any used in a
# `docker compose ... <service>` command in the README or the compose file's comments.
named = {"rabbitmq", "postgres", "minio", "worker"}
docs = pathlib.Path("README.md").read_text() + "\n" + compose_text
for m in re.finditer(r"--scale\s+([\w-]+)=", docs):
    named.add(m.group(1))
for m in re.finditer(r"docker compose (?:logs|exec|restart|stop|start|run)(?:\s+-\S+)*\s+([\w-]+)", docs):
    named.add(m.group(1))
for name in sorted(named - set(services)):
    errors.append(f"service {name!r} is named in the docs but not defined")

for name, svc in services.items():
    deps = svc.get("depends_on") or []
    for dep in (deps if isinstance(deps, list) else deps.keys()):
        if dep not in services:
            errors.append(f"{name}: depends_on unknown service {dep!r}")
    if not (svc.get("image") or svc.get("build")):
        errors.append(f"{name}: neither image nor build")

worker = services.get("worker", {})
if "container_name" in worker:
    errors.append("worker: container_name prevents --scale")
for port in worker.get("ports") or []:
    if ":" in str(port):
        errors.append(f"worker: host port {port!r} prevents --scale")
if not worker.get("build"):
    errors.append("worker: must be built from this repository's Dockerfile")

# Every variable the worker gets must be one the binary reads (clap `env = "..."`),
# or a secret referenced by storage integrations (`secret_ref: env:NAME`), or RUST_LOG.
src = "\n".join(p.read_text() for p in pathlib.Path("workers/metadata-worker/src").glob("*.rs"))
known = set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', src)) | {"RUST_LOG"}
env = worker.get("environment") or {}
if isinstance(env, list):
    env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
for key in env:
    if key not in known and not key.endswith(("_SECRET_KEY", "_SECRET")):
        errors.append(f"worker: environment {key} is not a setting of metadata-worker")
for required in ("AMQP_URL", "DATABASE_URL", "SINKS", "CONCURRENCY", "PREFETCH", "TEMP_DIR", "METRICS_ADDR", "MAX_ASSET_BYTES"):
    if required not in known:
        errors.append(f"metadata-worker no longer reads {required}")
    if required not in env:
        errors.append(f"worker: {required} is not set")
sinks = str(env.get("SINKS", ""))
if "postgres" in sinks and "DATABASE_URL" not in env:
    errors.append("worker: SINKS names postgres without DATABASE_URL")

dockerfile = pathlib.Path("Dockerfile").read_text()
stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", dockerfile, re.M | re.I)
if len(stages) < 2:
    errors.append("Dockerfile: not multi-stage")
users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
if not users or users[-1].split(":")[0] in ("root", "0"):
    errors.append("Dockerfile: the runtime stage must run as a non-root USER")

if errors:
    for e in errors:
        print(f"check-compose: {e}", file=sys.stderr)
    sys.exit(1)
print(f"check-compose: ok ({len(services)} services: {', '.join(services)})")
PY
