#!/usr/bin/env bash
# Build the addon (release) and put it next to index.js as recovar.node.
# Honours CARGO_TARGET_DIR; extra arguments go to cargo (e.g. --locked).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
cargo build --release -p recovar-node "$@"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$(uname -s)" in
  Darwin) lib="librecovar_node.dylib" ;;
  MINGW* | MSYS* | CYGWIN*) lib="recovar_node.dll" ;;
  *) lib="librecovar_node.so" ;;
esac
# Copy to a temporary name then rename: a running node process that has the old addon
# mapped keeps its copy intact.
cp "$target/release/$lib" "$here/recovar.node.tmp"
mv -f "$here/recovar.node.tmp" "$here/recovar.node"
echo "built $here/recovar.node"
