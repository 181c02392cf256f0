# Keyward: a multi-stage image. Build with the Rust image, run on Debian slim as a
# non-root user. Not built in CI (see docs/deploy.md).
#
#   docker build -t keyward .
#   docker run --rm -p 8080:8080 -v $PWD/keyward.toml:/etc/keyward/keyward.toml:ro \
#     -v keyward-state:/var/lib/keyward --env-file keyward.env keyward

# --- build ---------------------------------------------------------------------------
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
# --locked: exactly the Cargo.lock the tests ran with. SQLite is bundled and TLS is rustls
# with built-in web roots, so the binary needs nothing from the runtime image but libc.
RUN cargo build --release --locked -p keyward \
 && install -D -m 0755 target/release/keyward /out/keyward

# --- run -----------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/keyward --shell /usr/sbin/nologin keyward \
 && install -d -o keyward -g keyward -m 0700 /var/lib/keyward \
 && install -d -m 0755 /etc/keyward
COPY --from=build /out/keyward /usr/local/bin/keyward
USER keyward
WORKDIR /var/lib/keyward
# The config must listen on 0.0.0.0:8080 inside the container and keep its state file
# under /var/lib/keyward (state = "/var/lib/keyward/state.db"), or use Redis (fleet mode).
VOLUME ["/var/lib/keyward"]
EXPOSE 8080
# Liveness: /healthz answers "ok" while the process serves (/readyz is for load
# balancers: 503 until a fleet replica has loaded the fleet's state). No curl in the
# image: bash's /dev/tcp sends the request.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
# SIGTERM drains in-flight requests and streams for up to 30 s: give it that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/keyward"]
CMD ["serve", "--config", "/etc/keyward/keyward.toml"]
