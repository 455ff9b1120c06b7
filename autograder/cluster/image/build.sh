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
SUITE="${SUITE:-bookworm}"  # its python3 is 3.11, the kit's
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
podman build --network=host --build-arg BASE="$BASE" -t "$IMAGE" -f "$WORK/context/Containerfile" "$WORK/context"
podman image ls "$IMAGE"
