#!/usr/bin/env bash
# `make bench`: install what the benchmark needs, then run it. Arguments pass through to
# bench/bench.py (see `bash bench/run.sh --help`), e.g.
#   bash bench/run.sh --connections 100 --duration 10
#   bash bench/run.sh --parts http,profile        # also profile ours with py-spy
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
    echo "[bench] installing wrk (apt-get)" >&2
    apt-get update
    apt-get install -y wrk
fi

# The project's venv, made by `make .venv` (a no-op when it is up to date).
make --no-print-directory .venv >/dev/null
PYTHON=.venv/bin/python

# py-spy only for the profile part, and never into the project's venv.
if [[ " $* " == *profile* ]] && [[ -z "${PY_SPY:-}" ]] && ! command -v py-spy >/dev/null 2>&1 \
    && [[ ! -x /tmp/py-spy/bin/py-spy ]]; then
    echo "[bench] installing py-spy into /tmp/py-spy (pip --target)" >&2
    python3 -m pip install --quiet --target /tmp/py-spy py-spy
fi

exec "$PYTHON" -m bench.bench "$@"
