# canaryd and its demo service in one small image (docker-compose.yml uses it for both).
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin canaryd

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/canaryd /usr/local/bin/canaryd
COPY templates /etc/canaryd/templates
ENTRYPOINT ["canaryd"]
