#!/usr/bin/env bash
# Build (once) and install Horovod 0.28.1 with TensorFlow + Gloo for the installed TensorFlow.
#
# Horovod ships no wheels and its binary is tied to the exact TensorFlow version it was compiled
# against, so the wheel is cached under wheels/horovod-tf<version>/ and reused while it matches.
# It also installs the plugin package (strategy=horovod) when missing.
# Idempotent: a second run with a working install does nothing; with a cached wheel it only installs.
#
# Usage:  plugins/scaleflow_horovod/build_horovod.sh            (uses .venv/bin/python at the repo root)
#         PYTHON=/path/to/python WHEEL_DIR=/some/cache plugins/scaleflow_horovod/build_horovod.sh
set -euo pipefail

HOROVOD_VERSION=0.28.1
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
PIP=("$PYTHON" -m pip)

# The TensorFlow version the wheel must match; read from package metadata (no TF import needed).
TF_VERSION="$("$PYTHON" - <<'PY'
from importlib import metadata
for dist in ("tensorflow-cpu", "tensorflow", "tensorflow-gpu", "tf-nightly"):
    try:
        print(metadata.version(dist)); break
    except metadata.PackageNotFoundError:
        pass
else:
    raise SystemExit("build_horovod.sh: TensorFlow is not installed in this Python; install scaleflow first")
PY
)"
PY_TAG="$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
KEY="horovod-tf${TF_VERSION}-${PY_TAG}"
WHEEL_DIR="${WHEEL_DIR:-$ROOT/wheels}/$KEY"
# A second cache outside the checkout, so a fresh clone (CI) on the same machine skips the build.
USER_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/scaleflow/wheels/$KEY"

# 0. The plugin itself (registers strategy=horovod); editable, like scaleflow in a checkout.
if ! "$PYTHON" -c 'from importlib.metadata import version; version("scaleflow-horovod")' >/dev/null 2>&1; then
    "${PIP[@]}" install -q --no-deps -e "$HERE"
fi

# 1. Already installed and built against this TF?  (horovod/metadata.json records the build's TF.)
installed_tf="$("$PYTHON" - <<'PY' 2>/dev/null || true
import importlib.util, json, os
spec = importlib.util.find_spec("horovod")
if spec and spec.origin:
    path = os.path.join(os.path.dirname(spec.origin), "metadata.json")
    with open(path) as f:
        print(json.load(f).get("tensorflow", ""))
PY
)"
if [ "$installed_tf" = "$TF_VERSION" ] && "$PYTHON" -c 'import horovod.tensorflow' >/dev/null 2>&1; then
    echo "build_horovod.sh: horovod $HOROVOD_VERSION already installed for TensorFlow $TF_VERSION"
    exit 0
fi

# 2. Build the wheel unless a matching one is cached.
wheel="$(ls "$WHEEL_DIR"/horovod-"$HOROVOD_VERSION"-*.whl "$USER_CACHE"/horovod-"$HOROVOD_VERSION"-*.whl \
         2>/dev/null | head -n1 || true)"
if [ -z "$wheel" ]; then
    command -v cmake >/dev/null || "${PIP[@]}" install -q cmake
    if ! command -v g++ >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq g++ make
        else
            echo "build_horovod.sh: a C++ compiler is required (apt-get install -y g++ make)" >&2; exit 1
        fi
    fi
    # --no-build-isolation builds against the installed TF; these are the build-time imports.
    "${PIP[@]}" install -q setuptools wheel packaging cloudpickle psutil pyyaml
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    "${PIP[@]}" download -q --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$work"
    tar -xzf "$work/horovod-$HOROVOD_VERSION.tar.gz" -C "$work"
    src="$work/horovod-$HOROVOD_VERSION"
    # TF >= 2.19 no longer ships the headers xla_mpi_ops.cc needs; it is GPU-only XLA code, off by default.
    sed -i '/xla_mpi_ops\.cc/d' "$src/horovod/tensorflow/CMakeLists.txt"
    echo "build_horovod.sh: building horovod $HOROVOD_VERSION for TensorFlow $TF_VERSION (~5+ min on 2 cores)"
    mkdir -p "$WHEEL_DIR"
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
    HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    MAKEFLAGS="-j${BUILD_JOBS:-$(nproc)}" \
        "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$work/dist" "$src"
    # Move into the cache only when complete, so an interrupted build never leaves a broken wheel.
    mv "$work"/dist/horovod-"$HOROVOD_VERSION"-*.whl "$WHEEL_DIR"/
    wheel="$(ls "$WHEEL_DIR"/horovod-"$HOROVOD_VERSION"-*.whl | head -n1)"
    mkdir -p "$USER_CACHE" 2>/dev/null && cp -f "$wheel" "$USER_CACHE"/ 2>/dev/null || true
fi

# 3. Install it; --force-reinstall replaces a Horovod built against another TF.
"${PIP[@]}" install -q --force-reinstall --no-deps "$wheel"
"${PIP[@]}" install -q cloudpickle psutil pyyaml packaging
"$PYTHON" -c 'import horovod, horovod.tensorflow as hvd; print("build_horovod.sh: horovod", horovod.__version__, "ready for TensorFlow", hvd.tf.__version__, "gloo built:", hvd.gloo_built())'
