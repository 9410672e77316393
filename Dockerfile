# syntax=docker/dockerfile:1
#
# The quickstart service (examples/quickstart.rs) as a minimal image: a static binary in an
# empty (`scratch`) runtime stage, 6.5 MB in all (see README, "Deployment and demo").
#
#   docker build -t flux-quickstart .                  # compile inside the `build` stage
#   docker build -t flux-quickstart \
#       --build-arg FLUX_BINARY=prebuilt -f Dockerfile DIR
#                                                      # or take DIR/quickstart, a static
#                                                      # binary built on the host (scripts/container)
#
# The image listens on 0.0.0.0:3000 and reads FLUX_REDIS_URL, FLUX_FAILURE_POLICY and the
# other FLUX_* settings from its environment (README, "Configuration").

# Which stage provides /quickstart: `build` (compile here) or `prebuilt` (copy from the context).
ARG FLUX_BINARY=build

# ---- build: a static binary, compiled from this repository -------------------------------
FROM rust:1.95-slim AS build
WORKDIR /src
COPY . .
# glibc, statically linked (+crt-static); the explicit --target (the build machine's own)
# keeps the flag away from proc macros and build scripts. No debug info, symbols stripped.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    host="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --target "$host" -p flux-examples --example quickstart \
 && cp "target/$host/release/examples/quickstart" /quickstart

# ---- prebuilt: the same binary, built on the host (the context holds only `quickstart`) ---
FROM scratch AS prebuilt
COPY quickstart /quickstart

# ---- the binary of whichever stage FLUX_BINARY names -------------------------------------
FROM ${FLUX_BINARY} AS binary

# ---- runtime: nothing but the binary -----------------------------------------------------
FROM scratch AS runtime
COPY --from=binary /quickstart /quickstart
ENV FLUX_ADDR=0.0.0.0:3000 \
    RUST_LOG=info
EXPOSE 3000
# Any unprivileged uid: the binary needs no file and no user database.
USER 65534:65534
# The quickstart shuts down gracefully on SIGINT (Ctrl-C); as PID 1 it would ignore SIGTERM.
STOPSIGNAL SIGINT
ENTRYPOINT ["/quickstart"]
