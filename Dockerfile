# syntax=docker/dockerfile:1
#
# tenantry container image: build with the locked dependencies, run as a non-root user
# on distroless.
#
#   docker build -t tenantry:0.1.0 .
#   docker run --rm -p 50051:50051 -p 8080:8080 -e TENANTRY_JWT_SECRET=change-me tenantry:0.1.0
#
# The builder (Debian 12 "bookworm") and the runtime (distroless Debian 12) share one
# glibc, so the dynamically linked binary (libc, libm, libgcc_s only: SQLite is bundled,
# TLS is rustls) runs unchanged. No system protoc is needed: build.rs compiles the
# protos with protox.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# 1. Dependencies only: the manifests and the lock file with stub targets, so this
#    layer is rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
COPY migrations/Cargo.toml migrations/Cargo.toml
# Patched dependencies (vendor/README.md) are part of the dependency layer.
COPY vendor vendor
RUN mkdir -p src migrations/src \
    && echo 'fn main() {}' > build.rs \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs migrations/src/lib.rs \
    && cargo build --release --locked --bin tenantry \
    && rm -rf build.rs src migrations/src \
        target/release/.fingerprint/tenantry-* \
        target/release/deps/tenantry-* target/release/deps/libtenantry* \
        target/release/deps/migrations-* target/release/deps/libmigrations* \
        target/release/build/tenantry-*

# 2. The service itself.
COPY build.rs ./
COPY proto proto
COPY config config
COPY migrations migrations
COPY src src
RUN cargo build --release --locked --bin tenantry \
    && install -D -m 0755 target/release/tenantry /out/usr/local/bin/tenantry \
    && mkdir -p /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="tenantry" \
      org.opencontainers.image.description="System of record for organizations (tenants) on multi-tenant AI-agent platforms" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/usr/local/bin/tenantry /usr/local/bin/tenantry
# The embedded SQLite database lives in /data (mount a volume there to keep it).
COPY --from=builder --chown=65532:65532 /out/data /data
WORKDIR /data
# distroless "nonroot" is uid/gid 65532; numeric so that runAsNonRoot can verify it.
USER 65532:65532

ENV DATABASE_URL=sqlite:///data/tenantry.db \
    TENANTRY_DATA_DIR=/data \
    TENANTRY_LOG_FORMAT=json \
    TENANTRY_GRPC_ADDR=0.0.0.0:50051 \
    TENANTRY_HTTP_ADDR=0.0.0.0:8080

# gRPC (tenantry.v1, grpc.health.v1, reflection), then HTTP (/healthz, /readyz,
# /metrics, POST /webhooks/stripe).
EXPOSE 50051 8080

ENTRYPOINT ["/usr/local/bin/tenantry"]
CMD ["serve"]
