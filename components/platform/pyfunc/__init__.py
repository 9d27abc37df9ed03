"""MLflow "models from code" files: each is copied into every logged model of its kind and executed by
MLflow when the model is loaded (``mlflow.pyfunc.load_model``, ``mlflow models serve``), so each imports
only mlflow, torch, transformers, safetensors (and peft for an adapter) — never alignflow. A serving host
needs none of this package. ``components/platform/mlflow_models.py`` logs them."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
CHAT_MODEL_CODE = HERE / "chat_model.py"  # a causal LM (policy, judge, base) answering chat requests
REWARD_MODEL_CODE = HERE / "reward_model.py"  # a scalar reward model scoring (prompt, response) rows
