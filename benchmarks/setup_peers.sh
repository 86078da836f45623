#!/usr/bin/env bash
# Creates .venv-peers: byol (editable) + the peers that benchmarks/peers.py compares against.
# The peers (lightly, kornia, byol-pytorch) live only in this separate environment: they are never
# dependencies of the byol package.
#
#   bash benchmarks/setup_peers.sh            # idempotent; PYTHON=python3.11 to choose the interpreter
#   nice -n 19 .venv-peers/bin/python benchmarks/peers.py --quick
#   nice -n 19 .venv-peers/bin/python benchmarks/parity.py --check-pieces    # and parity.py's runs
#
# Peer versions: what pip resolved against torch 2.14.1 on 2026-11-25, pinned so that runs stay comparable
# Only the peers themselves are pinned; their own dependencies are whatever pip resolves (in .venv-peers on
# 2026-12-07: lightly 1.6.0 with pytorch-lightning 2.6.6; byol-pytorch 0.9.1 with accelerate 1.16.0 and
# einops 0.8.2). Neither enters a timed step: peers.py times the peers' modules, not their trainers.
# To move on: PEERS="lightly kornia byol-pytorch" bash benchmarks/setup_peers.sh, then update the pins here.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-peers
read -r -a PEERS <<< "${PEERS:-lightly==1.6.0 kornia==0.9.0 byol-pytorch==0.9.1}"

pip_install() {  # quiet, minus the harmless warnings about this machine's empty extra index folders
  "$VENV/bin/python" -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
pip_install --upgrade pip
# torch/torchvision exactly as in the package's own environment (constraints.txt).
pip_install -c constraints.txt torch==2.14.1 torchvision==0.29.1
pip_install -c constraints.txt -e .
# psutil: peak RSS including DataLoader worker processes (peers.py falls back to ru_maxrss without it).
# pytest: tests/test_parity.py's tests of lightly's pieces run here (they skip in the package's venv).
pip_install -c constraints.txt "${PEERS[@]}" psutil pytest
"$VENV/bin/python" - <<'PY'
from importlib.metadata import version
print("peers env:", ", ".join(f"{p} {version(p)}" for p in ("torch", "torchvision", "byol", "lightly", "kornia", "byol-pytorch", "psutil", "pytest")))
PY
