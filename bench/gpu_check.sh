#!/usr/bin/env bash
# Every GPU measurement of issue 20 in one run, sized for under 8 minutes on one H100/H200:
#
#   1. gen-135m   generation at the SmolLM2-135M shape, 64 prompts × 8 samples × 256 tokens: HF generate
#                 (dynamic cache; static cache, compiled) vs the static sampler (CUDA graph), stalls included
#   2. dpo-1b     preference training at the Llama-1B shape: fp32 master weights (bf16 autocast, packed) vs
#                 bf16 parameters + fp32 master weights (packed): pairs/s, MFU, peak memory, final loss
#   3. gen-1b     generation at the Llama-1B shape, as 1 but 128 new tokens per sample
#   4. mcts       MCTS expansion at the 135M shape: HF generate vs the static sampler (8 trees)
#   5. gen-135m-inductor  the static sampler with inductor + CUDA graph (compile stall, round-2 and
#                 new-process stalls on the warm on-disk cache)
#   6. dpo-1b-compiled    bf16 master weights + compiled decoder forward
#
# Phases run in that order while BUDGET_S (default 450 s) lasts, each under a timeout that fits what is
# left; PHASES="gen-1b mcts" runs only those. The sizes are estimates from the issue's H100 numbers, not
# measurements: summary.md records each phase's wall time, so a second run can pick what is left.
#
# Needs: python3 with torch (CUDA) and the repository's pins (transformers 5.23, pydantic). On a machine
# whose python lacks them, run bench/gpu_prepare.sh where pip works first: it leaves wheels in .whl/ and
# SmolLM2's tokenizer in .gpu/tokenizer, which this script installs / uses (carry both).
#
# Writes to $OUT (or bench/results/gpu-<time>/): summary.md (environment, every table, phase times),
# the benches' JSON files and logs.txt — seven files at most.
#
# DRY_RUN=cpu runs the same phases on the CPU with the tiny shape and a handful of tokens: it checks the
# script and the benches' arguments in a few minutes, measures nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
DEST=${OUT:-$REPO/bench/results/gpu-$STAMP}
mkdir -p "$DEST"
BUDGET_S=${BUDGET_S:-450}
PHASES=${PHASES:-"gen-135m dpo-1b gen-1b mcts gen-135m-inductor dpo-1b-compiled"}
PY=${PYTHON:-python3}
START=$(date +%s)
SUMMARY=$DEST/summary.md
LOGS=$DEST/logs.txt

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing .whl/ failed" >&2; exit 1; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ALIGNFLOW_NO_PROGRESS=1
TOKENIZER=${TOKENIZER:-$REPO/.gpu/tokenizer}
TOK_ARGS=()
[ -d "$TOKENIZER" ] && TOK_ARGS=(--tokenizer "$TOKENIZER")

{
    echo "# issue 20 GPU measurements, $STAMP"
    echo
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
    $PY -c 'import sys, torch, transformers; print("python", sys.version.split()[0], "| torch", torch.__version__,
"| transformers", transformers.__version__, "| cuda", torch.version.cuda, "| gpu", torch.cuda.is_available()
and torch.cuda.get_device_name())' 2>&1
    echo '```'
    echo
} >"$SUMMARY"
DEV=cuda S135=smollm2-135m S1B=llama-1b
GEN_SIZE=() DPO_SIZE=(--pairs 512 --batch-size 16) MCTS_SIZE=(--problems 8)
if [ "${DRY_RUN:-}" = cpu ]; then
    DEV=cpu S135=tiny S1B=tiny
    GEN_SIZE=(--prompts 2 --samples 2 --new-tokens 8) DPO_SIZE=(--pairs 8 --batch-size 4 --max-length 128)
    MCTS_SIZE=(--problems 1 --n-iters 1 --actions 2 --depth-limit 2 --max-new-tokens 6)
    echo "DRY_RUN=cpu: the tiny shape on the CPU, nothing here is a measurement" >>"$SUMMARY"
elif ! $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "no CUDA device visible to $PY: nothing measured" | tee -a "$SUMMARY"
    exit 1
fi
$PY -c 'import transformers, sys; sys.exit(0 if transformers.__version__ == "5.23.0" else 1)' \
    || echo "WARNING: transformers is not 5.23.0 (the sampler is written against 5.23's StaticCache)" | tee -a "$SUMMARY"

# phase NAME MAX_SECONDS COMMAND...: runs COMMAND if NAME is in PHASES and at least 60 s of the budget are
# left, under a timeout of min(MAX_SECONDS, what is left); its output goes to logs.txt
phase() {
    local name=$1 max=$2
    shift 2
    case " $PHASES " in *" $name "*) ;; *) return 0 ;; esac
    local left=$((BUDGET_S - ($(date +%s) - START)))
    if ((left < 60)); then
        echo "- $name: skipped, ${left} s of the budget left" >>"$SUMMARY"
        return 0
    fi
    local limit=$((max < left ? max : left)) began=$(date +%s)
    echo "=== $name (limit ${limit} s): $*" >>"$LOGS"
    timeout --signal=INT --kill-after=10 "$limit" "$@" >"$DEST/.phase" 2>&1
    local rc=$?
    cat "$DEST/.phase" >>"$LOGS"
    case $name in gen-*) ;; *)  # the generation benches write their own tables; the others' are in their output
        { echo "### $name"; echo; grep -E '^\||^throughput ratio|^speed-up|params\) on|trees, ' "$DEST/.phase"; echo; } \
            >>"$DEST/.tables" ;;
    esac
    rm -f "$DEST/.phase"
    echo "- $name: exit $rc after $(($(date +%s) - began)) s (limit $limit s)" >>"$SUMMARY"
}

GEN=(bench/generation_throughput.py --device $DEV "${TOK_ARGS[@]}" "${GEN_SIZE[@]}")
DPO=(bench/dpo_throughput.py --device $DEV --shape $S1B "${DPO_SIZE[@]}" --bf16 --packing "${TOK_ARGS[@]}")
# hf-static-compiled on the CPU would compile for minutes: the dry run checks the uncompiled static path
HF_STATIC=hf-static-compiled
[ $DEV = cpu ] && HF_STATIC=hf-static
phase gen-135m 220 $PY "${GEN[@]}" --shape $S135 --methods hf-dynamic $HF_STATIC ours \
    --new-process ours --out "$DEST/generation-135m.md"
phase dpo-1b 150 $PY "${DPO[@]}" --trainers alignflow-packed alignflow-bf16master --json "$DEST/dpo-1b.json"
phase gen-1b 200 $PY "${GEN[@]}" --shape $S1B --methods hf-dynamic $HF_STATIC ours --new-process ours \
    --out "$DEST/generation-1b.md" $([ $DEV = cuda ] && echo --new-tokens 128)
phase mcts 100 $PY bench/mcts_throughput.py --device $DEV --shape $S135 "${MCTS_SIZE[@]}" \
    --skip naive "alignflow, fresh self-eval" "${TOK_ARGS[@]}"
phase gen-135m-inductor 150 $PY "${GEN[@]}" --shape $S135 --methods ours-inductor \
    --new-process ours-inductor --out "$DEST/generation-135m-inductor.md"
phase dpo-1b-compiled 150 $PY "${DPO[@]}" --trainers alignflow-bf16master-compiled --json "$DEST/dpo-1b-compiled.json"

# the tables into the summary (the generation .md files are folded in and removed: $OUT keeps few files)
{
    echo
    for f in "$DEST"/generation-*.md; do
        [ -f "$f" ] && { cat "$f"; echo; rm -f "$f"; }
    done
    echo "## DPO and MCTS"
    echo
    [ -f "$DEST/.tables" ] && cat "$DEST/.tables" && rm -f "$DEST/.tables"
    echo "total $(($(date +%s) - START)) s of a ${BUDGET_S} s budget"
} >>"$SUMMARY"
cat "$SUMMARY"
