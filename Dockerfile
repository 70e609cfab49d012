# sluice's container image: one binary, every role. The Kubernetes
# Deployments run the same image and differ only in their arguments
# (`fetcher ...`, `mapper`, `saver ...`).
#
#     docker build -t sluice .
#     docker run --rm sluice --help
#
# Two stages: Debian bookworm with the -dev packages builds build/sluice
# exactly as `make` does on a developer's machine (the tests are not run
# here: `make test` needs nats-server and Prometheus); bookworm-slim then
# carries only the binary and the shared libraries it links.
# tests/test_docker.c checks this file against `ldd build/sluice` and the
# Makefile's DEBS, and builds the context this file sees with `make`.

FROM debian:bookworm AS build

# The build half of the Makefile's DEBS (nats-server and prometheus are
# only for tests). --no-install-recommends is enough: every .pc file the
# Makefile's pkg-config call reads is reached through Depends.
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential \
      pkg-config \
      libnats-dev \
      libjansson-dev \
      libsqlite3-dev \
      libmicrohttpd-dev \
      libcurl4-openssl-dev \
      libpq-dev \
      zlib1g-dev \
      libjq-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# .dockerignore keeps a host's build/, databases and .git out of the context,
# so this builds from the sources alone.
COPY . .
RUN make -j"$(nproc)" \
 && install -D -m 0755 build/sluice /usr/local/bin/sluice


FROM debian:bookworm-slim

ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="Chunked, exactly-once-in-the-sink processing over NATS: fetcher, mapper and saver in one binary" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"

# The packages that provide what `ldd build/sluice` lists (`dpkg -S`):
# libnats.so.3.4, libjansson.so.4, libsqlite3.so.0, libmicrohttpd.so.12,
# libcurl.so.4, libpq.so.5, libz.so.1 and libjq.so.1; everything else it links (libssl3, libprotobuf-c1, gnutls,
# krb5, ...) comes in through their Depends, libc6 is in the base image.
# ca-certificates is the system CA bundle, for `nats-exporter` scraping an
# https:// monitoring endpoint (libcurl's default trust store).
# The uid is fixed (10001) so that a Pod's securityContext (runAsUser,
# fsGroup) can name it.
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates \
      libcurl4 \
      libjansson4 \
      libjq1 \
      libmicrohttpd12 \
      libnats3.4 \
      libpq5 \
      libsqlite3-0 \
      zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 sluice \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /data \
      --shell /usr/sbin/nologin sluice \
 && install -d -o 10001 -g 10001 -m 0750 /data

COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice

# The fetcher's ledger (sluice-<job>.ledger) and the SQLite sink are written
# relative to the working directory, so a volume mounted on /data keeps
# them. No VOLUME instruction: Kubernetes mounts its own, and an anonymous
# Docker volume per `docker run` would only hide where the data went.
USER 10001:10001
WORKDIR /data

# The --http port (/metrics, /healthz, /readyz) the manifests give each
# role: `--http :8080` or SLUICE_HTTP=:8080. Off unless asked for.
EXPOSE 8080

# sluice handles SIGTERM itself (src/stop.c), so it can be PID 1.
ENTRYPOINT ["sluice"]
CMD ["--help"]
