#!/usr/bin/env bash
# Make sure NVRTC (the CUDA runtime compiler, libnvrtc.so.13) is available so that the CUDA
# kernels can be compiled to PTX in a test (core/tests/cuda_kernels_compile.rs) on a machine
# without a GPU or a CUDA toolkit. Idempotent.
#   - fetches the PyPI wheel nvidia-cuda-nvrtc (CUDA 13, NVIDIA's redistributable, ~115 MB
#     unpacked) with Python's standard library only (no pip or venv needed), and unpacks its
#     libraries into $RECOVAR_NVRTC_DIR (default ~/.cache/recovar/nvrtc-<version>);
#   - does nothing when they are already there.
# The last line printed is the folder holding libnvrtc.so.13: put it on LD_LIBRARY_PATH.
set -euo pipefail

version="${RECOVAR_NVRTC_VERSION:-13.0.88}"
dir="${RECOVAR_NVRTC_DIR:-$HOME/.cache/recovar/nvrtc-$version}"

if [ -e "$dir/libnvrtc.so.13" ]; then
    echo "ensure_nvrtc: NVRTC $version already in $dir"
    echo "$dir"
    exit 0
fi

echo "ensure_nvrtc: downloading nvidia-cuda-nvrtc $version from PyPI"
python3 - "$version" "$dir" <<'PY'
import io, json, os, platform, sys, urllib.parse, urllib.request, zipfile

version, dest = sys.argv[1], sys.argv[2]
arch = {"x86_64": "x86_64", "aarch64": "aarch64"}.get(platform.machine())
if arch is None:
    sys.exit(f"ensure_nvrtc: no NVRTC wheel for machine {platform.machine()}")
index = "https://pypi.org/pypi/nvidia-cuda-nvrtc/json"
meta = json.load(urllib.request.urlopen(index, timeout=60))
wheels = [u for u in meta["releases"].get(version, [])
          if u["filename"].endswith(".whl") and "manylinux" in u["filename"]
          and arch in u["filename"]]
if not wheels:
    sys.exit(f"ensure_nvrtc: nvidia-cuda-nvrtc {version} has no manylinux {arch} wheel")
# Mirrors may answer with URLs relative to the index.
url = urllib.parse.urljoin(index, wheels[0]["url"])
data = urllib.request.urlopen(url, timeout=600).read()
os.makedirs(dest + ".part", exist_ok=True)
n = 0
with zipfile.ZipFile(io.BytesIO(data)) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        # libnvrtc.so.13 and its builtins; the ".alt" copies are not needed.
        if "/lib/" in name and base.startswith("libnvrtc") and ".alt." not in base:
            with open(os.path.join(dest + ".part", base), "wb") as f:
                f.write(z.read(name))
            n += 1
if n == 0:
    sys.exit("ensure_nvrtc: the wheel holds no libnvrtc library")
os.replace(dest + ".part", dest)
print(f"ensure_nvrtc: unpacked {n} libraries into {dest}")
PY
test -e "$dir/libnvrtc.so.13" || { echo "ensure_nvrtc: libnvrtc.so.13 missing in $dir" >&2; exit 1; }
echo "$dir"
