# syntax=docker/dockerfile:1
# Multi-stage build of the biglearn binary. The build stage keeps cargo's registry and the
# target directory in BuildKit cache mounts, so a rebuild after a source change compiles
# only the changed crates (not rdkafka's bundled librdkafka and every dependency again).
# The image's binary is stripped (no symbols, no debug info). Only this build sets that,
# through cargo's profile environment variables: the workspace's release profile keeps the
# line tables that profiles of the benchmarks use.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=true
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p biglearn \
    && cp target/release/biglearn /usr/local/bin/biglearn

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/biglearn biglearn \
    && mkdir -p /var/lib/biglearn/data && chown -R biglearn /var/lib/biglearn
COPY --from=build /usr/local/bin/biglearn /usr/local/bin/biglearn
USER biglearn
WORKDIR /var/lib/biglearn
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:3000/healthz || exit 1
ENTRYPOINT ["biglearn"]
CMD ["up", "--listen", "0.0.0.0:3000", "--data-dir", "/var/lib/biglearn/data"]
