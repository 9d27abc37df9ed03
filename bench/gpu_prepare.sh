#!/usr/bin/env bash
# Run where pip reaches PyPI and the repository is installed (its venv), before carrying the checkout to a
# bare GPU machine whose python3 has torch (CUDA) but not the repository's pins: leaves the wheels
# bench/gpu_check.sh installs in .whl/ (transformers 5.23 and pydantic, for CPython 3.12 on x86-64 Linux;
# PYTHON_VERSION to change) and SmolLM2's tokenizer in .gpu/tokenizer (both git-ignored: carry them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PYVER=${PYTHON_VERSION:-3.12}
mkdir -p .whl .gpu
"$PY" -m pip download --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl transformers==5.23.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
    typing-inspection==0.4.5 typing-extensions==4.16.0
"$PY" - <<'PYTHON'
from pathlib import Path

from alignflow.components.modeling.checkpoints import load_tokenizer, smollm2_directory

load_tokenizer(smollm2_directory(Path("~/.cache/alignflow/models").expanduser())).save_pretrained(".gpu/tokenizer")
print("tokenizer saved to .gpu/tokenizer")
PYTHON
ls -la .whl .gpu/tokenizer
