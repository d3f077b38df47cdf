#!/usr/bin/env bash
# Developer build: compiles _core into build/dev and links it into
# python/aas_core, so `PYTHONPATH=python pytest` runs against this tree.
set -euo pipefail
cd "$(dirname "$0")"
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release -DAAS_PYTHON=ON \
  -Dpybind11_DIR="$(python -c 'import pybind11; print(pybind11.get_cmake_dir())')" >/dev/null
cmake --build build/dev
ln -sf "$(ls "$PWD"/build/dev/_core*.so | head -1)" python/aas_core/
