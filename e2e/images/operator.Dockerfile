# vecshard-operator: a static-enough Rust binary (rustls, no OpenSSL) on Debian slim.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN CARGO_BUILD_JOBS=4 cargo build --release -p vecshard-operator --bin vecshard-operator

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/vecshard-operator /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/vecshard-operator"]
