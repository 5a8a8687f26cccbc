#!/usr/bin/env bash
# Install librecovar for C and C++ programs, after `cargo build --release`:
#
#   bindings/cpp/install.sh --prefix PREFIX [--lib-dir DIR]
#
# writes
#   PREFIX/lib/librecovar.so, PREFIX/lib/librecovar.a
#   PREFIX/include/recovar.h, PREFIX/include/recovar.hpp
#   PREFIX/lib/cmake/recovar/recovarConfig.cmake (+ recovarConfigVersion.cmake)
#       find_package(recovar) -> targets recovar::recovar (shared), recovar::recovar_static
#   PREFIX/lib/pkgconfig/recovar.pc
#       pkg-config --cflags --libs recovar   (add --static for librecovar.a's system libraries)
#
# The libraries are taken from DIR (--lib-dir), else $CARGO_TARGET_DIR/release, else
# ./target/release of the repository. Re-running it overwrites the previous install.
set -euo pipefail

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
prefix=""
libdir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="${2:?--prefix needs a folder}"; shift 2 ;;
        --prefix=*) prefix="${1#--prefix=}"; shift ;;
        --lib-dir) libdir="${2:?--lib-dir needs a folder}"; shift 2 ;;
        --lib-dir=*) libdir="${1#--lib-dir=}"; shift ;;
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown argument '$1'" >&2; usage 2 >&2 ;;
    esac
done
[ -n "$prefix" ] || { echo "install.sh: --prefix PREFIX is required" >&2; usage 2 >&2; }

if [ -z "$libdir" ]; then
    if [ -n "${CARGO_TARGET_DIR:-}" ]; then
        libdir="$CARGO_TARGET_DIR/release"
    else
        libdir="$repo/target/release"
    fi
fi
so="$libdir/librecovar.so"
a="$libdir/librecovar.a"
for f in "$so" "$a"; do
    if [ ! -f "$f" ]; then
        echo "install.sh: $f not found; run \`cargo build --release\` first (or pass --lib-dir)" >&2
        exit 1
    fi
done

header="$repo/include/recovar.h"
ver() { sed -n "s/^#define RCV_VERSION_$1 \([0-9][0-9]*\).*/\1/p" "$header"; }
version="$(ver MAJOR).$(ver MINOR).$(ver PATCH)"
case "$version" in
    *[0-9].*[0-9].*[0-9]) ;;
    *) echo "install.sh: cannot read RCV_VERSION_* from $header" >&2; exit 1 ;;
esac

mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"
install -d "$prefix/lib" "$prefix/include" "$prefix/lib/cmake/recovar" "$prefix/lib/pkgconfig"
install -m 0755 "$so" "$prefix/lib/librecovar.so"
install -m 0644 "$a" "$prefix/lib/librecovar.a"
install -m 0644 "$header" "$prefix/include/recovar.h"
install -m 0644 "$here/recovar.hpp" "$prefix/include/recovar.hpp"
install -m 0644 "$here/cmake/recovarConfig.cmake" "$here/cmake/recovarConfigVersion.cmake" \
    "$prefix/lib/cmake/recovar/"
# System libraries of the Rust standard library for static linking (Linux/glibc; what
# `rustc --print native-static-libs` prints for this crate).
native_libs="-lpthread -ldl -lm -lrt -lutil -lgcc_s"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" -e "s|@NATIVE_LIBS@|$native_libs|g" \
    "$here/recovar.pc.in" > "$prefix/lib/pkgconfig/recovar.pc"

echo "installed recovar $version into $prefix"
echo "  CMake:      find_package(recovar $version REQUIRED) with -DCMAKE_PREFIX_PATH=$prefix"
echo "  pkg-config: PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs recovar"
echo "  run time:   the shared library is in $prefix/lib (LD_LIBRARY_PATH or an rpath)"
