# vecshard-server (shard, router, dev) and vecshardctl. The release binary links libstdc++
# (usearch's C++), so the runtime image is Debian slim rather than scratch.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN CARGO_BUILD_JOBS=4 cargo build --release -p vecshard-server --bin vecshard-server --bin vecshardctl

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/vecshard-server /src/target/release/vecshardctl /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/vecshard-server"]
