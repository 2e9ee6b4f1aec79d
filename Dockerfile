# Multi-stage build: compile in the Rust image, run in slim Debian as a non-root user.
# The container runs exactly what the README runs: `materializer run --config ...`.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
RUN cargo build --release --locked --bin materializer

FROM debian:bookworm-slim
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
ENTRYPOINT ["materializer"]
CMD ["run", "--config", "/etc/materializer/materializer.toml"]
