#!/usr/bin/env bash
# Make sure `cmake` (3.16 or newer) can be run, for the C++ package test
# (ffi/tests/cpp_package.rs). Idempotent: does nothing when cmake is already there.
#   - found on PATH or in ~/.local/bin: says so;
#   - else, as root with apt-get: `apt-get install -y cmake` (after `apt-get update` if needed);
#   - else: `python3 -m pip install --user cmake` (into ~/.local/bin, which the test also
#     searches).
# Prints what it did; the last line is the path of the cmake found. Exits non-zero only when
# every way failed.
set -uo pipefail

found() {
    local c
    for c in "$(command -v cmake 2>/dev/null)" "$HOME/.local/bin/cmake"; do
        if [ -n "$c" ] && [ -x "$c" ] && "$c" --version >/dev/null 2>&1; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

if c=$(found); then
    echo "ensure_cmake: $("$c" --version | head -n 1) already at $c"
    echo "$c"
    exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure_cmake: installing cmake with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q cmake >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 && apt-get install -y -q cmake >/dev/null 2>&1
    fi
    if c=$(found); then
        echo "ensure_cmake: apt-get installed $("$c" --version | head -n 1) at $c"
        echo "$c"
        exit 0
    fi
    echo "ensure_cmake: apt-get could not install cmake; trying pip"
fi

py="${RECOVAR_TEST_PYTHON:-python3}"
if command -v "$py" >/dev/null 2>&1; then
    echo "ensure_cmake: installing cmake with $py -m pip install --user cmake"
    "$py" -m pip install -q --user cmake >/dev/null 2>&1 ||
        "$py" -m pip install -q --user --break-system-packages cmake >/dev/null 2>&1
    if c=$(found); then
        echo "ensure_cmake: pip installed $("$c" --version | head -n 1) at $c"
        echo "$c"
        exit 0
    fi
fi

echo "ensure_cmake: could not install cmake (no apt-get as root, no pip); the C++ package test will be skipped" >&2
exit 1
