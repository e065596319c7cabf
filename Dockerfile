# kz-groups container image: build with the Rust toolchain, run from a slim Debian image.

FROM rust:1-bookworm AS builder
WORKDIR /src
# The whole tree, since the build may embed files such as schemas/ and couch_views/;
# .dockerignore drops target/, .git and node_modules.
COPY . .
RUN cargo build --release --locked --bin kz-groups

FROM debian:bookworm-slim AS runtime
# curl serves the compose healthcheck; ca-certificates in case COUCHDB_URL is https.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin kzgroups
COPY --from=builder /src/target/release/kz-groups /usr/local/bin/kz-groups
USER kzgroups
ENV KZ_GROUPS_LISTEN=0.0.0.0:8000 \
    RUST_LOG=info
EXPOSE 8000
CMD ["kz-groups", "serve"]
