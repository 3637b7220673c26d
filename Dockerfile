# hcld as a BIDS-App container image.
#
#   podman build -t hcld .                       # or: docker build -t hcld .
#   docker run --rm --read-only --tmpfs /tmp --network none -u "$(id -u):$(id -g)" \
#     -v /data/bids:/data:ro -v /data/out:/out hcld /data /out participant --participant-label 01
#
# Build arguments:
#   FEATURES=flex (default)  pure-Rust CPU backend; the image is ~110 MB and needs nothing else.
#   FEATURES=tch             adds the LibTorch backend (fast CPU, NVIDIA GPUs with `--device cuda`):
#                            LibTorch comes from PyPI's torch==${TORCH_VERSION} wheel, which brings its
#                            CUDA runtime (the image grows by ~7 GB). Run with `--gpus all` (docker) or
#                            `--device nvidia.com/gpu=all` (podman + CDI).
#   BUILDER_IMAGE            the build stage's base: Debian bookworm with Rust from Debian's
#                            `rustc-web`/`cargo-web` (default), or e.g. rust:1.95-bookworm.
# Crates: when the build context has a `vendor/` folder (`cargo vendor`), the build is offline
# (`--offline`, no HTTPS needed); otherwise cargo fetches from crates.io. Both use Cargo.lock (--locked).
ARG BUILDER_IMAGE=debian:bookworm-slim
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS build
ARG FEATURES=flex
ARG TORCH_VERSION=2.9.0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Rust 1.89+ is needed: bookworm's plain `rustc` is 1.63, `rustc-web` (bookworm-security) is recent.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \
 && if ! command -v cargo >/dev/null; then \
      apt-get install -y --no-install-recommends rustc-web cargo-web; \
    fi \
 && if [ "$FEATURES" = tch ]; then \
      apt-get install -y --no-install-recommends g++ python3 python3-venv; \
    fi \
 && rm -rf /var/lib/apt/lists/*
# LibTorch for FEATURES=tch, in a venv whose path is the same in the runtime stage (the wheel's
# libraries find their CUDA libraries through relative rpaths). An empty folder for flex.
RUN mkdir -p /opt/torch \
 && if [ "$FEATURES" = tch ]; then \
      python3 -m venv /opt/torch \
      && /opt/torch/bin/pip install --no-cache-dir --disable-pip-version-check "torch==${TORCH_VERSION}"; \
    fi
WORKDIR /src
COPY . .
# OFFLINE is empty or one flag, so it is left unquoted on purpose. The image's binary keeps its
# symbols (panic backtraces name functions) but not the line tables (180 MB of the 210 MB).
# hadolint ignore=SC2086
RUN if [ -d vendor ]; then \
      mkdir -p .cargo \
      && printf '[source.crates-io]\nreplace-with = "vendored"\n[source.vendored]\ndirectory = "vendor"\n' \
         > .cargo/config.toml; \
      OFFLINE=--offline; \
    fi \
 && if [ "$FEATURES" = tch ]; then \
      export LIBTORCH_USE_PYTORCH=1 PATH="/opt/torch/bin:$PATH" VIRTUAL_ENV=/opt/torch; \
    fi \
 && CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --release --locked ${OFFLINE:-} --features "$FEATURES" --bin hcld \
 && install -m 0755 target/release/hcld /usr/local/bin/hcld \
 && rm -rf target

FROM ${RUNTIME_IMAGE}
ARG FEATURES=flex
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="hcld" \
      org.opencontainers.image.description="BIDS-App: harmonise T1-weighted MRI across scanners and sites with 3D conditional latent diffusion" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/hcld-dev/hcld" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim" \
      io.hcld.features="${FEATURES}"
COPY --from=build /opt/torch /opt/torch
COPY --from=build /usr/local/bin/hcld /usr/local/bin/hcld
# The 3-subject example dataset (4 MB): for `%test` of the Apptainer image and for a first try:
#   docker run --rm hcld /opt/hcld/examples/multisite /tmp/out participant --method zscore
COPY --from=build /src/examples/multisite /opt/hcld/examples/multisite
# A non-root user; `-u <any uid>` works as well, since nothing is written outside the mounted
# OUTPUT_DIR, the work dir and TMPDIR: with `--read-only`, /tmp must be writable (podman mounts a
# tmpfs there by itself; docker needs `--tmpfs /tmp`), or pass `-w` to a mounted work dir.
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /tmp hcld \
 && hcld --version
# Threads: hcld sizes its own pools from --nprocs / --omp-nthreads (default: the CPUs the container
# may use, cgroup quota included). BLAS/MKL pools are pinned to 1 so no library oversubscribes
# them; OMP_NUM_THREADS is left to LibTorch (FEATURES=tch), whose intra-op pool it sizes: pass
# `-e OMP_NUM_THREADS=N` together with `--nprocs N` to cap a tch job.
ENV HOME=/tmp \
    TMPDIR=/tmp \
    LD_LIBRARY_PATH=/opt/torch/lib/python3.11/site-packages/torch/lib \
    MKL_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1
USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["hcld"]
CMD ["--help"]
