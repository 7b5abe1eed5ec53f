#!/usr/bin/env bash
# Set up a fresh machine: system simulator (Icarus, optional), a virtual
# environment in .venv, and the package with every extra the tests need.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# Icarus Verilog is the second simulator of the RTL tests (Debian package).
if ! command -v iverilog >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing iverilog (apt-get)"
        apt-get update -qq >/dev/null && apt-get install -y -qq iverilog >/dev/null
    else
        echo "setup: iverilog not found and cannot apt-get install it; its tests will be skipped" >&2
    fi
fi

# LZ4 and zlib headers: Verilator's FST waveform writer (--waves FILE.fst) is compiled with them.
if ! printf '#include <lz4.h>\n#include <zlib.h>\n' | c++ -E -x c++ - >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing liblz4-dev zlib1g-dev (apt-get)"
        apt-get update -qq >/dev/null && apt-get install -y -qq liblz4-dev zlib1g-dev >/dev/null
    else
        echo "setup: LZ4/zlib headers not found and cannot apt-get install them; FST waveforms will not build" >&2
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade "pip>=24"
echo "setup: installing systolic[dev] into .venv (versions of constraints.txt)"
.venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
echo "setup: done"
