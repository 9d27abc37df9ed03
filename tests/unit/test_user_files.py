"""Files a user writes are read the same whatever editor wrote them (a UTF-8 byte-order mark) and
whatever the machine's locale; a file that is not UTF-8 is named with its row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignflow.components.config import ConfigError, load_config
from alignflow.components.data.io import DataValidationError, read_rows
from alignflow.components.data.schemas import ProblemRow

REPO = Path(__file__).resolve().parents[2]
BOM = b"\xef\xbb\xbf"


def test_a_jsonl_saved_with_a_bom_reads_like_one_without(tmp_path):
    rows = [{"id": str(i), "question": f"What is {i} + 1?", "solution": f"The answer is {i + 1}.", "answer": i + 1,
             "difficulty": 1, "template": "t"} for i in range(2)]
    path = tmp_path / "problems.jsonl"
    path.write_bytes(BOM + "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8"))
    assert [r.model_dump() for r in read_rows(path, ProblemRow)] == rows


def test_a_jsonl_that_is_not_utf8_is_named_with_its_row(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_bytes(b'{"id": "1"}\n{"id": "caf\xe9"}\n')  # Latin-1
    with pytest.raises(DataValidationError, match=r"problems.jsonl: row 2: not UTF-8 text"):
        read_rows(path, ProblemRow)


def test_params_yaml_with_a_bom_loads(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(BOM + "# système: ''\nseed: 3\npreference:\n  beta: 0.2\n".encode("utf-8"))
    cfg = load_config(path)
    assert cfg.seed == 3 and cfg.preference.beta == 0.2


def test_user_files_load_under_a_non_utf8_locale(tmp_path):
    """params.yaml, a DeepSpeed JSON and a Kubernetes manifest, saved with a BOM and a non-ASCII
    comment, read in a process whose locale encoding is ASCII (LC_ALL=C without UTF-8 mode): the
    default encoding of read_text() failed there."""
    (tmp_path / "params.yaml").write_bytes(BOM + "# système\nseed: 3\n".encode("utf-8"))
    (tmp_path / "zero.json").write_bytes(BOM + b'{"zero_optimization": {"stage": 2}}')
    (tmp_path / "job.yaml").write_bytes(BOM + "# tâche\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
                                              .encode("utf-8"))
    script = ("import sys, locale\n"
              "assert locale.getpreferredencoding(False).lower() in ('ansi_x3.4-1968', 'ascii', 'us-ascii')\n"
              "from alignflow.components.config import load_config\n"
              "from alignflow.components.trainers.stepping import load_deepspeed_config\n"
              "from alignflow.components.platform.k8s.manifests import load_manifests\n"
              "d = sys.argv[1]\n"
              "assert load_config(d + '/params.yaml').seed == 3\n"
              "assert load_deepspeed_config(d + '/zero.json', 4, 1.0, False)['zero_optimization'] == {'stage': 2}\n"
              "assert [doc['kind'] for _, doc in load_manifests(d + '/job.yaml')] == ['ConfigMap']\n")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_deepspeed_config_with_a_bom_loads(tmp_path):
    from alignflow.components.trainers.stepping import load_deepspeed_config

    path = tmp_path / "zero2.json"
    path.write_bytes(BOM + (REPO / "infra" / "deepspeed" / "zero2.json").read_bytes())
    assert load_deepspeed_config(path, 4, 1.0, False)["train_micro_batch_size_per_gpu"] == 4


def test_a_params_yaml_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes("data:\n  system_prompt: café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"params.yaml: not UTF-8 text"):
        load_config(path)
