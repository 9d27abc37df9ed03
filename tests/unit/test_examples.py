"""The example project a user copies (examples/): its params load, its files pass the data check in
every role, its reward function scores with TRL's convention, and the committed data is what
examples/make_data.py writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alignflow.components.config import load_config

REPO = Path(__file__).resolve().parents[2]


def test_the_example_project_loads_validates_and_scores(monkeypatch):
    from alignflow.components.scoring.base import ScoringItem
    from alignflow.components.scoring.build import build_scorers
    from alignflow.components.stages.data import load_roles

    monkeypatch.chdir(REPO)  # the example's paths are relative to the repository root, as the README runs it
    preferences = "data.sources.preferences=[{source: examples/data/preferences.jsonl}]"
    cfg = load_config(REPO / "examples" / "params.yaml", [f"state_dir={REPO / '.alignflow'}", preferences])
    roles, contaminated = load_roles(cfg)
    assert {role: len(rows) for role, rows in roles.items()} == {"sft": 128, "prompts": 256, "preferences": 128,
                                                                 "eval": 200}
    assert contaminated == []
    [scorer] = build_scorers(cfg)
    example = roles["eval"][0]
    gold = example.columns["answer"]
    items = [ScoringItem(example.id, example.prompt, f"... The answer is {gold}.", example.columns),
             ScoringItem(example.id, example.prompt, f"The answer is {gold + 1}.", example.columns)]
    assert scorer.score(items) == [1.0, 0.0] and scorer.pass_threshold == 1.0


def test_the_committed_example_data_is_what_make_data_writes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    before = {p.name: p.read_bytes() for p in (REPO / "examples" / "data").glob("*.jsonl")}
    copy = tmp_path / "examples"
    copy.mkdir()
    (copy / "make_data.py").write_text((REPO / "examples" / "make_data.py").read_text())
    subprocess.run([sys.executable, str(copy / "make_data.py")], check=True, env=env, capture_output=True)
    assert {p.name: p.read_bytes() for p in (copy / "data").glob("*.jsonl")} == before


def test_the_constraints_example_loads_with_every_override_the_readme_runs(monkeypatch):
    """examples/constraints.yaml and the README's overrides (the verifier-scored arm, the reward-model-only
    runs): each loads with nothing set that its choices leave unused, and scores what it says."""
    from alignflow.components.config import unused_settings
    from alignflow.components.stages.data import load_roles

    monkeypatch.chdir(REPO)
    path = REPO / "examples" / "constraints.yaml"
    arms = {
        "rm": [],
        "verifier": ["scoring.scorers=[{type: constraints}, {type: reward_model, weight: 0}]",
                     "tracking.registered_model=constraints-policy-verifier",
                     "reward.source=models:/alignflow-reward@production", "reward.labeller=null", "reward.prompts=64",
                     "reward.samples_per_prompt=4", "reward.min_accuracy=0.6", "reward.trainable_layers=null"],
        "gpm": ["rounds.n_rounds=0", "reward.loss=gpm", "scoring.scorers=[{type: constraints}]",
                "promotion.proxy_metric=null", "promotion.truth_metric=null"],
    }
    for name, overrides in arms.items():
        cfg = load_config(path, [f"state_dir={REPO / '.alignflow'}", *overrides])
        assert unused_settings(cfg) == [], name
        if name == "verifier":  # the RM arm's registered reward model, trained by nothing here
            assert cfg.reward.source == "models:/alignflow-reward@production" and cfg.reward.labeller is None
        else:
            assert cfg.reward.labeller is not None and cfg.reward.labeller.type == "constraints"
        assert cfg.reward.enabled
    rm = load_config(path)
    assert [(s.type, s.model, s.weight) for s in rm.scoring.scorers] == [("reward_model", None, 1.0),
                                                                         ("constraints", None, 0.0)]
    roles, contaminated = load_roles(load_config(path, [f"state_dir={REPO / '.alignflow'}"]))
    assert {role: len(rows) for role, rows in roles.items()} == {"sft": 128, "prompts": 256, "preferences": 0,
                                                                 "eval": 100}
    assert contaminated == []


def test_every_shape_in_the_example_data_is_detected_and_valid(tmp_path):
    """examples/data holds one file of each shape a user brings; each validates and is read as its format."""
    from alignflow.components.data.sources import check_sources

    data = REPO / "examples" / "data"
    report = check_sources({"sft": [{"source": str(data / "sft.jsonl")}, {"source": str(data / "sft_sharegpt.jsonl")},
                                    {"source": str(data / "sft_alpaca.jsonl")}],
                            "prompts": [{"source": str(data / "prompts.jsonl")}],
                            "preferences": [{"source": str(data / "preferences.jsonl")},
                                            {"source": str(data / "preferences_implicit.jsonl")}]},
                           cache_dir=tmp_path / "cache")
    assert report.ok, report.errors
    formats = {Path(s.source).name: s.format for s in report.sources}
    assert formats["sft_sharegpt.jsonl"] != formats["sft_alpaca.jsonl"] != formats["preferences_implicit.jsonl"]
    assert all(s.rows > 0 for s in report.sources) and len(formats) == 6, formats
    assert "sharegpt" in str(formats["sft_sharegpt.jsonl"]) and "alpaca" in str(formats["sft_alpaca.jsonl"])
    assert "implicit" in str(formats["preferences_implicit.jsonl"]), formats
