#!/usr/bin/env bash
# Build the separate virtualenv that runs MediaPipe's own Tasks FaceStylizer (the real client of
# our face_stylizer.task bundles; scripts/mediapipe_client.py runs in it).
#
#   bash scripts/mediapipe_venv.sh [VENV]     (default: .venv-mediapipe at the project root)
#
# mediapipe 0.10.21 is the newest wheel for CPython 3.11 on Linux x86-64 that still has
# FaceStylizer (0.10.30 removed it); it needs numpy < 2 and protobuf 4.x, so it cannot live in the
# project's environment (numpy 2.1.3, protobuf 5). Every package is pinned to the set that
# resolved and passed `pip check` here, so the client's numerics do not drift. Idempotent: a venv
# that already imports mediapipe 0.10.21 is left as it is. 35 to 55 s from PyPI, about 1 GB.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/.venv-mediapipe}
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3

pins=(
    mediapipe==0.10.21
    numpy==1.26.4 protobuf==4.25.9 flatbuffers==25.12.19 pillow==13.0.0
    absl-py==2.5.1 attrs==26.1.0 cffi==2.1.1 contourpy==1.3.3 cycler==0.12.1 fonttools==4.68.0
    jax==0.7.1 jaxlib==0.7.1 kiwisolver==1.5.1 matplotlib==3.11.2 ml_dtypes==0.5.4
    opencv-contrib-python==4.11.0.86 opt_einsum==3.4.0 packaging==26.4 pycparser==3.12
    pyparsing==3.3.3 python-dateutil==4.0.0 scipy==1.17.1 sentencepiece==0.2.3
    sounddevice==0.5.6 tzdata==2026.6
)

ready() {
    "$venv/bin/python" - <<'EOF' 2>/dev/null
import sys
import mediapipe
from mediapipe.tasks.python.vision import FaceAligner, FaceStylizer  # noqa: F401
import PIL  # noqa: F401
sys.exit(mediapipe.__version__ != "0.10.21")
EOF
}

if [ -x "$venv/bin/python" ] && ready; then
    echo "mediapipe_venv: $venv already has mediapipe 0.10.21"
    exit 0
fi

if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ] && [ -n "$(ls -A "$venv")" ]; then
    echo "mediapipe_venv: $venv exists and is not a virtualenv; not touching it" >&2
    exit 1
fi
start=$(date +%s)
"$python" -m venv --clear "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "${pins[@]}"
"$venv/bin/python" -m pip check
if ! ready; then
    echo "mediapipe_venv: $venv was built but cannot import mediapipe's FaceStylizer" >&2
    exit 1
fi
echo "mediapipe_venv: built $venv in $(( $(date +%s) - start )) s"
