#!/usr/bin/env bash
# The GPU pool check, from the repository root, in one device call:
#
#   bash gpu/pool_check.sh [--install-only] [--dry-run] [gpu.pool_check options...]
#
# Installs the wheels carried in .whl/ (and .whl2/, after gpu/prepare_wheels.py --split) into
# $GPU_SITE (default /tmp/site) without touching the image's torch, then runs
# `python -m gpu.pool_check` with the repository on PYTHONPATH (no `pip install -e .`: that
# would pull the project's pinned torch). Results and the whole log go to $OUT.
# --install-only stops after the install (the first of two calls, see docs/benchmarks.md).
# --dry-run installs nothing and runs the tiny CPU pipeline with this environment's Python.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
SITE=${GPU_SITE:-/tmp/site}
OUT=${OUT:-$REPO/gpu-out}
PYTHON=${PYTHON:-python3}
install_only=0
dry_run=0
args=()
for arg in "$@"; do
    case $arg in
        --install-only) install_only=1 ;;
        --dry-run) dry_run=1; args+=("$arg") ;;
        *) args+=("$arg") ;;
    esac
done
mkdir -p "$OUT"

if [ "$dry_run" = 0 ]; then
    shopt -s nullglob
    wheels=(.whl/*.whl .whl2/*.whl)
    if [ ${#wheels[@]} -gt 0 ]; then
        echo "installing ${#wheels[@]} wheels into $SITE"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target "$SITE" "${wheels[@]}"
    fi
    export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
    [ "$install_only" = 1 ] && { echo "installed into $SITE"; exit 0; }
    if ! "$PYTHON" -c "import ray, optuna, pydantic" 2>/dev/null; then
        echo "error: ray, optuna or pydantic is not importable from $SITE: carry .whl (and" \
            ".whl2, if split) in this call, or make the two calls within 30 s" >&2
        exit 3
    fi
else
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi

export PYTHONUNBUFFERED=1 RAY_DEDUP_LOGS=1
# Keep the run's output even if the command is cut: the log is written as it goes.
set -o pipefail
"$PYTHON" -m gpu.pool_check --out "$OUT" "${args[@]}" 2>&1 | tee "$OUT/log.txt"
