# syntax=docker/dockerfile:1
# The metadata worker: built in a full Rust image, run in a slim one as a non-root user.
#   docker build -t metadata-worker .
#   docker run --rm metadata-worker --help

FROM rust:1.95-slim-bookworm AS build
# aws-lc-sys (TLS for the S3 and STS clients) may build its C sources through cmake.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is copied
# out because the cache mount does not outlive this step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p metadata-worker \
 && install -D -m 0755 target/release/metadata-worker /out/metadata-worker

FROM debian:bookworm-slim AS runtime
# CA roots for HTTPS to S3/STS and amqps://; tini reaps and forwards SIGTERM as PID 1.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin worker \
 && install -d -o worker -g worker -m 0700 /var/tmp/metadata-worker
COPY --from=build /out/metadata-worker /usr/local/bin/metadata-worker
USER 10001:10001
# Downloads land here and are deleted at once; private to this container.
ENV TEMP_DIR=/var/tmp/metadata-worker \
    METRICS_ADDR=0.0.0.0:9090 \
    LOG_FORMAT=json
EXPOSE 9090
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/metadata-worker"]
CMD ["run"]
