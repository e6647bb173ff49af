# Floe container image: `floe` as entrypoint, config at /etc/floe/connector.toml.
#
# Build stage: the Rust toolchain builds exactly what `cargo build --release --locked` builds,
# with librdkafka compiled from source by the rdkafka crate.
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin floe \
 && cp target/release/floe /usr/local/bin/floe

# Runtime stage: slim Debian with CA certificates, running as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/floe --create-home floe
COPY --from=build /usr/local/bin/floe /usr/local/bin/floe
USER floe
WORKDIR /var/lib/floe
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD curl -fsS http://127.0.0.1:9464/healthz || exit 1
ENTRYPOINT ["floe"]
CMD ["run", "--config", "/etc/floe/connector.toml"]
