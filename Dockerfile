# syntax=docker/dockerfile:1
# oms-gateway: built with the Rust toolchain, run as a non-root user (uid 65532) on distroless
# (glibc and libgcc, no shell, no package manager). No secret is baked in: the OMS credentials
# and TLS material are files mounted at run time (deploy/kubernetes, docs/mesh-and-deployment.md).
#
#   docker build -t registry.example.com/platform/oms-gateway:0.1.0 .
#   docker run --rm -p 127.0.0.1:50051:50051 registry.example.com/platform/oms-gateway:0.1.0 \
#     --listen 0.0.0.0:50051 --insecure-allow-unauthenticated --sandbox   # embedded sandbox, for a try
ARG RUST_VERSION=1.95

# Fully qualified image names: buildah and podman refuse a short name without a registries.conf
# alias, and elsewhere a short name may resolve to another registry.
FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src

# 1. The dependencies alone: manifests, lock file, build script and protos, with stub targets,
#    so this layer is rebuilt only when one of those changes, not on every source edit.
COPY Cargo.toml Cargo.lock build.rs ./
COPY sandbox/Cargo.toml sandbox/Cargo.toml
COPY oms-rest/Cargo.toml oms-rest/Cargo.toml
COPY proto proto
RUN mkdir -p src sandbox/src oms-rest/src tests/it benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs sandbox/src/lib.rs oms-rest/src/lib.rs tests/it/main.rs tests/secrets.rs \
          tests/security.rs tests/fuzz.rs benches/load.rs \
 && cargo build --release --locked --bin oms-gateway \
 && rm -rf src sandbox/src oms-rest/src

# 2. The gateway. COPY keeps the sources' old mtimes: touch them so cargo rebuilds over the stubs.
COPY src src
COPY sandbox/src sandbox/src
COPY oms-rest/src oms-rest/src
RUN touch src/main.rs src/lib.rs sandbox/src/lib.rs oms-rest/src/lib.rs \
 && cargo build --release --locked --bin oms-gateway \
 && install -D -m 0755 target/release/oms-gateway /out/oms-gateway

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="oms-gateway" \
      org.opencontainers.image.description="gRPC gateway in front of the Polygon OMS cash-in REST API" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/oms-gateway /usr/local/bin/oms-gateway
USER 65532:65532
# gRPC, the plaintext probe port (--health-listen), admin/metrics (--admin-listen).
EXPOSE 50051 50052 50053
ENTRYPOINT ["/usr/local/bin/oms-gateway"]
