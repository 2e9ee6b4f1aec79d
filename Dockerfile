# Multi-stage build: compile in the Rust image, run in slim Debian as a non-root user.
# The container runs exactly what the README runs: `materializer run --config ...`.
# Base images are pinned to exact tags (the toolchain the tests run with, and a
# dated Debian snapshot); bump both on purpose. Default features only: the
# `failpoints` test feature is never in this binary.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
# Dependencies first, in a layer of their own: built against stub sources, so
# a change under src/ reuses this layer and only recompiles the crate itself.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin materializer \
 && rm -rf src target/release/materializer* target/release/deps/materializer-* \
      target/release/deps/libmaterializer-* target/release/.fingerprint/materializer-*
COPY src src
COPY migrations migrations
# The stubs' artifacts are gone, so the real sources always compile, whatever
# their timestamps.
RUN cargo build --release --locked --bin materializer

FROM debian:bookworm-20251229-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin materializer
COPY --from=build /src/target/release/materializer /usr/local/bin/materializer
# The HTTP API (when [api] listen is set, e.g. "0.0.0.0:8080" with tokens).
EXPOSE 8080
# Mount the config (and view files) read-only here; relative paths in the
# config, such as registry.files = ["config/views/*.json"], resolve against it.
WORKDIR /etc/materializer
USER 10001:10001
# Liveness without curl: `health` GETs /healthz at the config's api.listen and
# exits 1 when the scheduler loop has stalled or the API does not answer. It
# needs [api] listen; without it, run with --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["materializer", "--config", "/etc/materializer/materializer.toml", "health", "--timeout", "5s"]
ENTRYPOINT ["materializer"]
CMD ["run", "--config", "/etc/materializer/materializer.toml"]
