#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image; the zip is
# unpacked in /autograder/source. It installs Python 3.11 (with uv), the kit's pinned
# packages and bubblewrap, the sandbox the grader runs student code in.
set -euo pipefail
cd /autograder/source
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends bubblewrap ca-certificates curl
curl -LsSf https://astral.sh/uv/install.sh | env UV_INSTALL_DIR=/usr/local/bin sh
uv venv --python 3.11 /autograder/venv
VIRTUAL_ENV=/autograder/venv uv pip install -r requirements.txt -c requirements.lock
/autograder/venv/bin/python -c "import torch, torchvision; print('torch', torch.__version__)"
