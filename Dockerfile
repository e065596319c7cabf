# kz-groups container image: build with the Rust toolchain, run from a slim Debian image.

FROM rust:1-bookworm AS builder
WORKDIR /src
# Dependencies first, in a layer of their own, built against a stand-in crate: an edit of the
# sources rebuilds only kz-groups itself, not its few hundred dependencies.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin kz-groups \
    && rm -rf src target/release/kz-groups* target/release/deps/kz_groups-* \
        target/release/deps/libkz_groups-* target/release/.fingerprint/kz-groups-*
# The whole tree, since the build embeds files such as schemas/, couch_views/ and docs/;
# .dockerignore drops target/, data/, .git and node_modules.
COPY . .
RUN cargo build --release --locked --bin kz-groups

FROM debian:bookworm-slim AS runtime
# curl serves the healthchecks; ca-certificates in case COUCHDB_URL is https.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin kzgroups \
    && install -d -m 0700 -o kzgroups -g kzgroups /var/lib/kz-groups
COPY --from=builder /src/target/release/kz-groups /usr/local/bin/kz-groups
# Without COUCHDB_URL the embedded store lives in ./data, i.e. /var/lib/kz-groups/data: a volume
# owned by the service's user (it holds the token signing key).
WORKDIR /var/lib/kz-groups
VOLUME /var/lib/kz-groups
USER kzgroups
ENV KZ_GROUPS_LISTEN=0.0.0.0:8000 \
    RUST_LOG=info
EXPOSE 8000
# Ready, not just alive: the store answers and the token signing material is there.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8000/readyz || exit 1
CMD ["kz-groups", "serve"]
