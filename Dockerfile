# The Gatehouse binaries on a slim Debian base.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/gatehouse-control-plane /src/target/release/gatehouse-ext-authz /src/target/release/gatehouse-ratelimit /src/target/release/gatehouse-broker /usr/local/bin/
USER nobody
ENV GATEHOUSE_DATA_DIR=/tmp/gatehouse
# JSON logs inside containers (every binary reads it).
ENV GATEHOUSE_LOG_FORMAT=json
ENTRYPOINT ["gatehouse-control-plane"]
