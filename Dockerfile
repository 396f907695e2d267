# Multi-stage build of the biglearn binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p biglearn && cp target/release/biglearn /usr/local/bin/biglearn

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/biglearn biglearn
COPY --from=build /usr/local/bin/biglearn /usr/local/bin/biglearn
USER biglearn
WORKDIR /var/lib/biglearn
EXPOSE 3000
HEALTHCHECK CMD curl -fsS http://127.0.0.1:3000/healthz || exit 1
ENTRYPOINT ["biglearn"]
CMD ["up", "--listen", "0.0.0.0:3000", "--data-dir", "/var/lib/biglearn/data"]
