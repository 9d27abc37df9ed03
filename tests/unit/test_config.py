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


# ---- cross-checks: a setting that cannot work fails at load time, naming its key ------------------

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
ZERO2 = str(REPO / "infra" / "deepspeed" / "zero2.json")


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "cdpo", "rdpo"])
def test_label_smoothing_at_or_above_one_half_is_rejected_whatever_the_loss(loss_type):
    """`preference.label_smoothing: 0.7` loaded with sigmoid and only failed mid-pipeline, at the first
    row carrying its own ε."""
    with pytest.raises(ConfigError, match=r"key 'preference': label_smoothing \(ε\) must be in \[0, 0.5\), got 0.7"):
        load_config(None, [f"preference.loss_type={loss_type}", "preference.label_smoothing=0.7"])


IGNORED = [  # (overrides, the section the message names, what it says)
    (["preference.label_smoothing=0.1"], "preference", "label_smoothing=0.1 has no effect with loss_type 'sigmoid'"),
    (["preference.loss_type=ipo", "preference.label_smoothing=0.2"], "preference", "loss_type 'ipo'"),
    (["preference.length_normalize=true"], "preference", "length_normalize=True has no effect with loss_type "
                                                         "'sigmoid'"),
    (["preference.alpha=0.3"], "preference", "alpha=0.3 has no effect with divergence 'reverse_kl'"),
    (["preference.packing=false", "preference.pack_length=512"], "preference", "pack_length=512 has no effect"),
    (["preference.deepspeed_config=no/such/zero2.json"], "preference", "deepspeed_config='no/such/zero2.json' does "
                                                                        "not exist"),
    (["judge.preference.label_smoothing=0.1"], "judge.preference", "label_smoothing=0.1 has no effect"),
    (["reward.gpm_k=4"], "reward", "gpm_k=4 has no effect with loss 'bt'"),
    (["reward.loss=eurus", "reward.gpm_tau=0.3"], "reward", "gpm_tau=0.3 has no effect with loss 'eurus'"),
    (["reward.n_attributes=3"], "reward", "n_attributes=3 has no effect with loss 'bt'"),
    (["reward.rank_attribute=1"], "reward", "rank_attribute=1 has no effect"),
    (["reward.strength_threshold=0.5"], "reward", "strength_threshold=0.5 has no effect with strength_mode 'none'"),
    (["reward.strength_mode=flip", "reward.smooth_epsilon=0.2"], "reward", "smooth_epsilon=0.2 has no effect with "
                                                                           "strength_mode 'flip'"),
    (["reward.loss=regression", "reward.strength_mode=flip"], "reward", "loss 'regression' trains on attribute rows"),
    (["reward.deepspeed_config=missing.json"], "reward", "deepspeed_config='missing.json' does not exist"),
    (["launch.rdzv_endpoint=host:29500"], "launch", "rdzv_endpoint='host:29500' has no effect with nnodes 1"),
    (["launch.backend=kubernetes", "launch.nnodes=2", "launch.rdzv_endpoint=h:1"], "launch", "with backend kubernetes"),
    (["promotion.judge=/models/judge"], "promotion", "judge='/models/judge' has no effect without min_judge_win_rate"),
    (["promotion.judge_prompts=8"], "promotion", "judge_prompts=8 has no effect"),
    (["promotion.approval_timeout_s=60"], "promotion", "approval_timeout_s=60 has no effect with require_approval"),
]


@pytest.mark.parametrize("overrides,section,says", IGNORED, ids=[" ".join(o) for o, _, _ in IGNORED])
def test_a_setting_the_chosen_option_ignores_is_rejected_naming_the_key(overrides, section, says):
    import re

    expected = rf"key '{re.escape(section)}': .*{re.escape(says)}.*: (set|remove|raise|point)"
    with pytest.raises(ConfigError, match=expected):
        load_config(None, overrides)


ACCEPTED = [
    ["preference.loss_type=cdpo", "preference.label_smoothing=0.1"],
    ["preference.loss_type=rdpo", "preference.label_smoothing=0.49"],
    ["preference.label_smoothing=0.0"],  # the default, written out: harmless
    ["preference.loss_type=ipo", "preference.length_normalize=true"],
    ["preference.divergence=alpha", "preference.alpha=0.3"],
    ["preference.packing=true", "preference.pack_length=512"],
    ["preference.packing=auto", "preference.pack_length=512"],  # packs on CUDA
    [f"preference.deepspeed_config={ZERO2}"],
    ["reward.loss=gpm", "reward.gpm_k=4", "reward.gpm_tau=0.3"],
    ["reward.loss=regression", "reward.n_attributes=3", "reward.rank_attribute=2"],
    ["reward.strength_mode=smooth", "reward.strength_threshold=0.5", "reward.smooth_epsilon=0.2"],
    ["launch.nnodes=2", "launch.rdzv_endpoint=h:1"],
    ["promotion.min_judge_win_rate=0.5", "promotion.judge=/models/judge", "promotion.judge_prompts=8"],
    ["promotion.require_approval=true", "promotion.approval_timeout_s=60"],
]


@pytest.mark.parametrize("overrides", ACCEPTED, ids=[" ".join(o) for o in ACCEPTED])
def test_the_same_settings_with_their_choice_load_and_survive_the_task_round_trip(overrides):
    from alignflow.components.config import PipelineConfig

    cfg = load_config(None, overrides)
    # every task re-validates the pipeline's config from model_dump, where every field counts as set
    assert PipelineConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_sections_the_pipeline_leaves_unused_warn_naming_their_keys():
    from alignflow.components.config import ConfigWarning, unused_settings, warn_unused_settings

    cfg = load_config(None, ["mcts.n_iters=1", "mcts.depth_limit=2", "synthesis.rationales=true", "judge.iterations=3",
                             "lora.enabled=false", "lora.r=8", "reward.epochs=3", "launch.kubernetes.namespace=team",
                             "sft.enabled=false", "sft.lr=1e-4"])
    messages = unused_settings(cfg)
    for keys in ("mcts.n_iters, mcts.depth_limit are set but rounds.kind is 'on_policy'", "synthesis.rationales",
                 "judge.iterations", "lora.r is set but lora.enabled is false", "reward.epochs",
                 "launch.kubernetes.namespace", "sft.lr is set but sft.enabled is false"):
        assert any(m.startswith(keys) for m in messages), (keys, messages)
    with pytest.warns(ConfigWarning, match="mcts.n_iters"):
        assert warn_unused_settings(cfg) == messages
    mcts = unused_settings(load_config(None, ["rounds.kind=mcts", "mcts.n_iters=1", "sampling.temperature=0.7",
                                              "sampling.prompts_per_round=8", "pairs.strategy=all_pairs"]))
    assert [m.split(" are set")[0].split(" is set")[0] for m in mcts] == ["sampling.temperature", "pairs.strategy"]
    assert unused_settings(load_config(None, ["rounds.kind=mcts", "mcts.n_iters=1"])) == []


def test_the_shipped_configs_load_cleanly(tmp_path):
    """params.yaml, every deployment of prefect.yaml (a partial config its flow validates) and the tests'
    tiny pipeline: no error, no warning, nothing unused."""
    import warnings

    import yaml

    from alignflow.components.config import PipelineConfig, unused_settings
    from tests.conftest import tiny_overrides

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert unused_settings(load_config(REPO / "params.yaml")) == []
        assert unused_settings(load_config(REPO / "params.yaml", tiny_overrides(tmp_path))) == []
        deployments = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))["deployments"]
        assert len(deployments) >= 6
        for deployment in deployments:
            cfg = PipelineConfig.model_validate(deployment["parameters"]["config"])
            if deployment["entrypoint"].startswith("flows/pipeline.py"):
                assert unused_settings(cfg) == [], deployment["name"]


def test_setting_one_key_of_a_configured_sub_section_keeps_its_other_defaults(tmp_path):
    """judge.sft defaults to SFTConfig(lr=2e-4, max_length=512): overriding epochs (on the command
    line or in params.yaml) must not reset max_length to SFTConfig's own 256 — that dropped most
    judge rows as too long."""
    default = load_config(None, [])
    assert (default.judge.sft.max_length, default.judge.sft.lr) == (512, 2e-4)
    overridden = load_config(None, ["judge.sft.epochs=40", "judge.preference.lr=1e-5"])
    assert (overridden.judge.sft.epochs, overridden.judge.sft.max_length, overridden.judge.sft.lr) == (40, 512, 2e-4)
    assert (overridden.judge.preference.lr, overridden.judge.preference.max_length) == (1e-5, 512)
    path = tmp_path / "params.yaml"
    path.write_text("judge:\n  sft:\n    epochs: 3\n")
    assert load_config(path).judge.sft.max_length == 512
    assert load_config(None, ["judge.sft.max_length=128"]).judge.sft.max_length == 128


@pytest.mark.parametrize("override, message", [
    ("scoring.scorers=[{type: arithmetic, weight: 0}]", "every scorer has weight 0"),
    ("scoring.scorers=[{type: arithmetic, weight: -1}]", "greater than or equal to 0"),
    ("scoring.scorers=[{type: arithmetic, weight: .nan}]", "finite number"),
    ("reward.source=models:/alignflow-reward", "expected models:/<registered model>@<alias> or"),
    ("scoring.scorers=[{type: reward_model, model: 'models:/rm/latest'}]", "expected models:/"),
])
def test_scorer_weights_and_model_uris_are_checked_at_load_time(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_a_model_uri_may_pin_a_version_number():
    cfg = load_config(None, ["reward.enabled=true", "reward.source=models:/alignflow-reward/3"])
    assert cfg.reward.source == "models:/alignflow-reward/3"


RM_PRIMARY = "scoring.scorers=[{type: reward_model, model: 'models:/alignflow-reward@production'}, {type: arithmetic}]"


@pytest.mark.parametrize("overrides, message", [
    (["promotion.metric=eval/typo/mean"], "names scorer 'typo', which scoring.scorers does not have"),
    (["promotion.metric=accuracy"], "is not an eval metric"),
    (["promotion.proxy_metric=eval/arithmetic/mean", "promotion.truth_metric=eval/constrains/pass_rate"],
     "promotion.truth_metric: 'eval/constrains/pass_rate' names scorer 'constrains'"),
    (["scoring.scorers=[{type: python, function: 'r.py:f'}]", "pairs.strategy=correct_vs_incorrect"],
     "has no pass rule"),
    (["promotion.metric=eval/arithmetic/mena"], "'eval/arithmetic/mena': a scorer's eval metrics are "
                                                "eval/arithmetic/mean, eval/arithmetic/pass_rate"),
    (["promotion.metric=eval/acuracy"], "'eval/acuracy' is not an eval metric: use eval/accuracy"),
    (["promotion.metric=eval/arithmetic/mean/"], "'eval/arithmetic/mean/' is not an eval metric"),
    (["promotion.metric=eval/arithmetic/kind/x/y"], "is not an eval metric"),
    (["promotion.metric=eval/kl_to_reference"], "the baseline has no reference"),
    (["promotion.metric=eval/accuracy_x1"], "'eval/accuracy_x1' is not an eval metric"),
    (["eval.group_by=[]", "promotion.metric=eval/accuracy_d1"], "'eval/accuracy_d1' is not an eval metric"),
    (["promotion.metric=eval/arithmetic/kind/title"], "constraints scorer id>/kind/<constraint kind>"),
    (["scoring.scorers=[{type: constraints}]", "promotion.metric=eval/constraints/kind/titel"],
     "constraints scorer id>/kind/<constraint kind>"),
    ([RM_PRIMARY, "promotion.metric=eval/reward_model/pass_rate"],
     "scorer 'reward_model' has no pass rule, so it logs no pass rate"),
    ([RM_PRIMARY, "promotion.metric=eval/accuracy"],
     "'eval/accuracy' is the primary scorer's pass rate, and 'reward_model' \\(reward_model\\) has no pass rule"),
    (["promotion.proxy_metric=eval/arithmetic/mean", "promotion.truth_metric=eval/arithmetic/pass_rate",
      "promotion.max_proxy_gap=true"], "max_proxy_gap.*a number"),
    (["promotion.proxy_metric=eval/arithmetic/mean", "promotion.truth_metric=eval/arithmetic/pass_rate",
      "promotion.max_proxy_gap=.inf"], "max_proxy_gap.*finite"),
])
def test_gate_metrics_and_pass_rules_are_checked_against_the_scorers_at_load_time(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_known_metric_names_and_a_pass_threshold_load():
    cfg = load_config(None, ["promotion.metric=eval/arithmetic/pass_rate", "pairs.strategy=correct_vs_incorrect",
                             "scoring.scorers=[{type: arithmetic}, {type: python, function: 'r.py:f', weight: 0}]"])
    assert cfg.promotion.metric == "eval/arithmetic/pass_rate"
    load_config(None, ["scoring.scorers=[{type: python, function: 'r.py:f', pass_threshold: 0.5}]",
                       "pairs.strategy=correct_vs_incorrect", "promotion.metric=eval/accuracy_d1"])
    load_config(None, ["scoring.scorers=[{type: constraints}]", "promotion.metric=eval/constraints/kind/title"])
    load_config(None, [RM_PRIMARY, "pairs.strategy=best_vs_worst", "promotion.metric=eval/reward_model/mean"])
    load_config(None, [RM_PRIMARY, "pairs.strategy=best_vs_worst", "promotion.metric=eval/arithmetic/pass_rate"])
