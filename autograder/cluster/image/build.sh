#!/usr/bin/env bash
# Build the grader's container image from Debian and PyPI alone (no image registry):
#   1. mmdebstrap makes a minimal Debian root file system with Python and bubblewrap;
#   2. podman imports it as the base image;
#   3. podman builds the Containerfile on it, with the pinned packages and the grader.
# Usage: autograder/cluster/image/build.sh [IMAGE] (default captioning-grader:latest),
# from the repository root, as root or with rootless podman. Needs mmdebstrap and podman
# (apt-get install mmdebstrap podman). SUITE and MIRROR choose the Debian release.
set -euo pipefail
IMAGE="${1:-captioning-grader:latest}"
SUITE="${SUITE:-trixie}"  # python3 3.13: the lock needs >= 3.11.5 (soupsieve), bookworm has 3.11.2
MIRROR="${MIRROR:-}"        # empty: this machine's apt sources
BASE="localhost/captioning-base:$SUITE"
PYTHON="${PYTHON:-.venv/bin/python}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

for tool in mmdebstrap podman; do
    command -v "$tool" >/dev/null || { echo "error: $tool is missing (apt-get install $tool)" >&2; exit 2; }
done
if ! podman image exists "$BASE"; then
    mmdebstrap --variant=minbase --include=python3,python3-venv,bubblewrap,ca-certificates,passwd \
        "$SUITE" "$WORK/rootfs.tar" $MIRROR
    podman import --change 'CMD ["/bin/bash"]' "$WORK/rootfs.tar" "$BASE"
fi
"$PYTHON" -m autograder.cluster.context "$WORK/context"
# --network=host: pip reaches PyPI the way this machine does (a proxy, say).
# --isolation=chroot: the build's RUN steps (pip) need no OCI runtime, hence no cgroups;
# crun refuses hosts with hybrid cgroups ("cgroups in hybrid mode not supported").
# HOST_CA: the CA bundle pip trusts during the build (this machine's by default: a site's
# TLS-inspecting proxy signs with its own CA); mounted for the build only, never in the image.
HOST_CA="${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}"
CA_ARGS=()
if [ -f "$HOST_CA" ]; then
    CA_ARGS=(-v "$HOST_CA:/run/host-ca.crt:ro" --build-arg HOST_CA_FILE=/run/host-ca.crt)
fi
podman build --isolation="${ISOLATION:-chroot}" --network=host --build-arg BASE="$BASE" "${CA_ARGS[@]}" \
    -t "$IMAGE" -f "$WORK/context/Containerfile" "$WORK/context"
podman image ls "$IMAGE"
