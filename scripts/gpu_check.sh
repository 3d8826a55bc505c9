#!/usr/bin/env bash
# The checks that need a GPU, as one script for a lent GPU machine (they never run in CI):
#   1. the test suite's CUDA tests and the torch backend's tests,
#   2. every task trained, resumed and run through its inference commands with
#      `--backend torch --device cuda`, and a CUDA checkpoint evaluated by the numpy backend,
#   3. the benchmark's GPU column (default and seq2seq configurations).
# Usage: DATA=DIR OUT=DIR bash scripts/gpu_check.sh, where DIR holds plants.data and g2p.tsv
# (source<TAB>target lines; a CMUdict sample). Logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" NUMPY_RNN_DATA_DIR="${DATA:?DATA: the folder with plants.data}" \
    PYTHONUNBUFFERED=1 MPLBACKEND=Agg
OUT="${OUT:?OUT: where the logs go}"
PY="${PYTHON:-python3}"
W="$(mktemp -d)"
status=0
check() {   # check NAME COMMAND...: run, log, and remember a failure
    local name="$1"; shift
    echo "== $name: $*"
    if "$@" >"$OUT/$name.log" 2>&1; then echo "   ok"; else
        echo "   FAILED ($?)"; tail -15 "$OUT/$name.log"; status=1; fi
}

nvidia-smi -L || true
"$PY" -c "import torch, numpy, sys; print(sys.version.split()[0], 'torch', torch.__version__, \
'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"

# 1. tests (pytest-xdist spreads them when it is installed)
if [ -z "${SKIP_TESTS:-}" ]; then
XDIST=$("$PY" -c "import xdist" 2>/dev/null && echo "-n 8" || true)
check tests timeout 150 "$PY" -m pytest -q -p no:cacheprovider $XDIST \
    tests/test_torch_backend.py tests/test_seq2seq_backends.py tests/test_seq2seq_model.py \
    tests/test_classify.py tests/test_conditional.py tests/test_cli.py
grep -E "passed|failed" "$OUT/tests.log" | tail -1
fi

# 2. every task on cuda through the CLI
D="--backend torch --device ${DEVICE:-cuda}"   # inference
T="$D --quiet"                                  # training
for task in lm classify conditional; do
    check "train-$task" "$PY" -m numpy_rnn train --task "$task" $T --steps 40 --eval-every 20 \
        --sample-every 20 --hidden-size 64 --out "$W/$task"
    check "resume-$task" "$PY" -m numpy_rnn train --task "$task" $T --steps 60 --eval-every 20 \
        --sample-every 20 --hidden-size 64 --out "$W/$task" --resume
    check "evaluate-$task-cuda" "$PY" -m numpy_rnn evaluate --checkpoint "$W/$task/checkpoint.npz" \
        $D --json
    check "evaluate-$task-numpy" "$PY" -m numpy_rnn evaluate --checkpoint \
        "$W/$task/checkpoint.npz" --json
    paste "$OUT/evaluate-$task-cuda.log" "$OUT/evaluate-$task-numpy.log"
done
check sample-lm "$PY" -m numpy_rnn sample --checkpoint "$W/lm/checkpoint.npz" $D --num-samples 5
check sample-conditional "$PY" -m numpy_rnn sample --checkpoint "$W/conditional/checkpoint.npz" \
    $D --num-samples 5
check predict-classify "$PY" -m numpy_rnn predict --checkpoint "$W/classify/checkpoint.npz" $D \
    "acer rubrum" "quercus alba"
check train-seq2seq "$PY" -m numpy_rnn train --task seq2seq --data "$DATA/g2p.tsv" $T --steps 60 \
    --eval-every 30 --sample-every 30 --hidden-size 64 --out "$W/g2p"
check resume-seq2seq "$PY" -m numpy_rnn train --task seq2seq --data "$DATA/g2p.tsv" $T \
    --steps 80 --eval-every 40 --sample-every 40 --hidden-size 64 --out "$W/g2p" --resume
check translate-cuda "$PY" -m numpy_rnn translate --checkpoint "$W/g2p/checkpoint.npz" $D \
    --beam 5 --nbest 2 hello world
check translate-numpy "$PY" -m numpy_rnn translate --checkpoint "$W/g2p/checkpoint.npz" \
    --beam 5 --nbest 2 hello world
diff "$OUT/translate-cuda.log" "$OUT/translate-numpy.log" && echo "   translate: cuda = numpy"
check evaluate-seq2seq "$PY" -m numpy_rnn evaluate --checkpoint "$W/g2p/checkpoint.npz" \
    --data "$DATA/g2p.tsv" $D --json

# 3. the benchmark's GPU column
if [ -z "${SKIP_BENCH:-}" ]; then
check bench-default timeout 150 "$PY" -m benchmarks --config default --workload forward-backward,train-step --rounds 2 --no-memory \
    --no-chart --out-dir "$OUT/bench"
check bench-seq2seq timeout 120 "$PY" -m benchmarks --config seq2seq --rounds 2 --no-memory \
    --no-chart --out-dir "$OUT/bench"
tail -n 30 "$OUT/bench-default.log" "$OUT/bench-seq2seq.log"
fi
exit $status
