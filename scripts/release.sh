#!/usr/bin/env bash
# Build a release as the README says: a fresh venv, `dvc repro` of the whole pipeline (offline,
# every stage through `bundle`), then the release zip checked against its SHA256SUMS and its
# float16 model run in LiteRT. Used by .github/workflows/release.yml; run it locally the same way.
#
#   scripts/release.sh            # set up .venv, reproduce, verify
#   RELEASE_VENV=reuse scripts/release.sh   # use the active Python environment as it is
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${RELEASE_VENV:-fresh}" != reuse ]; then
    python=${PYTHON:-python3.11}
    command -v "$python" >/dev/null || python=python3
    rm -rf .venv
    "$python" -m venv .venv
    # shellcheck disable=SC1091
    . .venv/bin/activate
    pip install -e .
fi

bash scripts/mediapipe_venv.sh  # the face models of the stylizer bundles (its own venv)
dvc repro
python scripts/verify_release.py release/blazestylegan.zip
echo "release: release/blazestylegan.zip"
