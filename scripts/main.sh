#!/usr/bin/env bash
# The main job from a clean clone: set up a virtual environment, train the CharRNN on the plant
# names with the NumPy backend, then sample labelled names from the checkpoint.
# Extra arguments go to `train` (e.g. --steps 50 for a short run, --backend torch).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${NUMPY_RNN_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "torch==2.13.0" -e ".[train]"
fi
# Use a local copy of the corpus when there is one (this workspace keeps it in ../shared/data);
# otherwise numpy_rnn downloads it into data/ and checks its sha256.
if [ -z "${NUMPY_RNN_DATA_DIR:-}" ] && [ -f ../shared/data/plants.data ]; then
    export NUMPY_RNN_DATA_DIR="$(cd ../shared/data && pwd)"
fi
OUT="${OUT:-runs/plants}"
"$VENV/bin/python" -m numpy_rnn train --out "$OUT" "$@"
"$VENV/bin/python" -m numpy_rnn sample --checkpoint "$OUT/checkpoint.npz" --num-samples 10 --label
