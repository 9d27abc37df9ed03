import pytest

from alignflow.components.config import ConfigError, load_config


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("preference:\n  beta: 0.2\nrounds:\n  n_rounds: 3\n")
    cfg = load_config(path, ["preference.loss_type=rdpo", "preference.label_smoothing=0.1"])
    assert cfg.preference.beta == 0.2 and cfg.rounds.n_rounds == 3
    assert cfg.preference.loss_type == "rdpo" and cfg.preference.label_smoothing == 0.1


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("preference:\n  lossType: ipo\n")
    with pytest.raises(ConfigError, match=r"(?s)params.yaml.*unknown key 'preference.lossType'"):
        load_config(path)


def test_bad_value_names_key():
    with pytest.raises(ConfigError, match=r"key 'preference.loss_type'"):
        load_config(None, ["preference.loss_type=dpo2"])
    with pytest.raises(ConfigError, match=r"(?s)label_smoothing.*\[0, 0.5\)"):
        load_config(None, ["preference.loss_type=rdpo", "preference.label_smoothing=0.5"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["rounds.n_rounds"])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_content_hash_ignores_tracking_but_not_training():
    a = load_config(None, [])
    assert a.content_hash() == load_config(None, ["tracking.experiment=other"]).content_hash()
    assert a.content_hash() != load_config(None, ["preference.beta=0.3"]).content_hash()


def test_repo_params_yaml_is_valid():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "params.yaml")
    assert cfg.model.source == "smollm2" and cfg.data.arithmetic.n_eval >= 200


def test_packing_auto_is_on_for_cuda_only_and_explicit_choices_stand():
    from alignflow.components.config import PreferenceConfig

    auto = PreferenceConfig()
    assert auto.packing == "auto"
    assert auto.for_device("cuda").packing is True and auto.for_device("cpu").packing is False
    assert PreferenceConfig(packing=False).for_device("cuda").packing is False
    assert PreferenceConfig(packing=True).for_device("cpu").packing is True
    with pytest.raises(ValueError):
        PreferenceConfig(packing="sometimes")  # pyright: ignore[reportArgumentType]  # the wrong value under test
