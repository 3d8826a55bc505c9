#!/usr/bin/env bash
# The long grapheme-to-phoneme recipe (issue 27): train the seq2seq task on CMUdict on every core
# of the machine (data parallel under mpiexec, one process per core, bit-equal to --grad-accum P),
# then score the checkpoint that dev chose on every test word with beam 5, as the README's table.
#
# Usage: PYTHON=/path/to/env/bin/python bash scripts/g2p.sh OUT [more train flags]
#   PYTHON     the Python of an environment with the extras installed (default: python3), e.g.
#              pip install "torch==2.13.0" -e ".[train,mpi,g2p]"; its mpiexec (the MPICH wheel's)
#              launches the processes
#   PROCESSES  how many (default: the machine's cores)
# Writes OUT/checkpoint.npz, best.npz, metrics.jsonl, loss.png, train.log, test.json. OUT must
# not hold a run yet (pass --overwrite to replace one, or --resume --steps N to continue one).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:?usage: bash scripts/g2p.sh OUT [more train flags]}"
shift
PYTHON="${PYTHON:-python3}"
BIN="$(dirname "$(command -v "$PYTHON")")"
MPIEXEC="${MPIEXEC:-$BIN/mpiexec}"
PROCESSES="${PROCESSES:-$(nproc)}"
# This clone's numpy_rnn, whatever the environment has installed.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -x "$MPIEXEC" ]; then
    echo "error: no mpiexec beside $PYTHON ($MPIEXEC): install the mpi extra (pip install -e \".[mpi]\")" >&2
    exit 2
fi
mkdir -p "$OUT"
# The recipe, fixed before its runs (README, "Sequence to sequence": every run is in the table).
RECIPE=(--task seq2seq --data cmudict --hidden-size 384 --num-layers 2 --dropout 0.3
        --embedding-dim 64 --target-embedding-dim 64 --label-smoothing 0.1 --ema 0.999
        --batch-size 64 --lr 2e-3 --lr-final 0.1 --steps 36000 --lr-decay-steps 36000
        --eval-every 3000 --sample-every 3000)
start=$(date +%s)
"$MPIEXEC" -n "$PROCESSES" "$PYTHON" -m mpi4py -m numpy_rnn train "${RECIPE[@]}" --out "$OUT" \
    "$@" 2>&1 | tee -a "$OUT/train.log"
trained=$(date +%s)
echo "training: $((trained - start)) s on $PROCESSES processes" | tee -a "$OUT/train.log"
"$PYTHON" -m numpy_rnn evaluate --checkpoint "$OUT/best.npz" --split test --beam 5 --json \
    | tee "$OUT/test.json" | tee -a "$OUT/train.log"
echo "evaluation: $(( $(date +%s) - trained )) s; the scores are in $OUT/test.json" \
    | tee -a "$OUT/train.log"
