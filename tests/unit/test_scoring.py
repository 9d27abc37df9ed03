"""Scorers: verifiers on a table of answer spellings, a user function with TRL's reward_funcs
convention, failures naming the scorer and the row, the weighted combination, the score cache."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from alignflow.components.config import PipelineConfig, ScorerSpec, load_config
from alignflow.components.scoring.base import ScoreCache, ScorerError, ScoringItem, combine, score_all
from alignflow.components.scoring.build import build_scorers
from alignflow.components.scoring.python import PythonScorer
from alignflow.components.scoring.verifiers import VERIFIERS


def _item(completion: str, gold=None, prompt: str | list[dict] = "Q?", **columns) -> ScoringItem:
    cols = {**({"answer": gold} if gold is not None else {}), **columns}
    return ScoringItem(prompt_id="p", prompt=prompt, completion=completion, columns=cols)


def _score(kind: str, completion: str, gold, **spec) -> float | None:
    scorer = VERIFIERS[kind](ScorerSpec(type=kind, **spec))  # type: ignore[arg-type]
    return scorer.score([_item(completion, gold)])[0]


GSM8K = [  # (completion, gold, passes)
    ("Step by step... #### 1,250", "1250", True),
    ("So the total is $12.", 12, True),
    ("#### -3", "-3", True),
    ("The answer is 12.0", "12", True),
    ("7 apples.", "#### 7", True),  # a gold written as a GSM8K solution
    ("She has 1250 left.\n#### 1250", "He paid 5 * 250 = 1,250 dollars\n#### 1,250", True),
    ("#### 13", "12", False),
    ("I don't know.", "12", False),
]


@pytest.mark.parametrize("completion,gold,passes", GSM8K)
def test_gsm8k_verifier_spellings(completion, gold, passes):
    assert _score("gsm8k", completion, gold) == float(passes)


MATH = [
    (r"The answer is $\boxed{7}$.", "7", True),
    (r"$\boxed{\frac{1}{2}}$", "0.5", True),
    (r"\boxed{0.5}", r"\frac{1}{2}", True),
    (r"so $x = \boxed{\dfrac{3}{4}}$", r"\frac{3}{4}", True),
    (r"\boxed{12}", "12.0", True),
    (r"\boxed{8}", "7", False),
]


@pytest.mark.parametrize("completion,gold,passes", MATH)
def test_math_verifier_compares_symbolically(completion, gold, passes):
    assert _score("math", completion, gold) == float(passes)


def test_math_verifier_works_off_the_main_thread():
    """Prefect runs tasks in worker threads; math-verify's own timeout needs the main thread."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(_score("math", r"\boxed{\frac{1}{2}}", "0.5")))
    thread.start()
    thread.join(120)
    assert out == [1.0]


ARITHMETIC = [  # graded: 1 correct, closer wrong answers score higher, -1 with no number
    ("The answer is 7.", 7, 1.0),
    ("The answer is 1,250.", 1250, 1.0),
    ("The answer is -$3.", -3, 1.0),
    ("The answer is 3 + 4 = 7.", 7, 1.0),
    ("no idea", 7, -1.0),
]


@pytest.mark.parametrize("completion,gold,expected", ARITHMETIC)
def test_arithmetic_verifier(completion, gold, expected):
    assert _score("arithmetic", completion, gold) == expected
    assert -1 < _score("arithmetic", "The answer is 8.", 7) < _score("arithmetic", "The answer is 7.5", 7) < 1  # type: ignore[operator]


def test_numeric_exact_regex_and_not_applicable_rows():
    assert _score("numeric", "about 3.1416", 3.14159, tolerance=1e-3) == 1.0
    assert _score("numeric", "about 3.2", 3.14159, tolerance=1e-3) == 0.0
    assert _score("exact_match", "  Paris \n", "paris") == 1.0
    assert _score("exact_match", "  Paris \n", "paris", normalize=False) == 0.0
    regex = VERIFIERS["regex"](ScorerSpec(type="regex", pattern=r"^\d+$"))
    assert regex.score([_item("42"), _item("forty-two")]) == [1.0, 0.0]
    # a verifier without a gold value in the row does not apply: None, never a 0
    assert VERIFIERS["gsm8k"](ScorerSpec(type="gsm8k")).score([_item("#### 3")]) == [None]
    custom = VERIFIERS["numeric"](ScorerSpec(type="numeric", gold_column="target"))
    assert custom.score([_item("5", target=5)]) == [1.0]


REWARDS = '''
def length_reward(prompts, completions, **kwargs):
    return [float(len(c if isinstance(c, str) else c[0]["content"])) for c in completions]


def convention(prompts, completions, answer, difficulty, **kwargs):
    # TRL's reward_funcs: every column but the prompt, one value per completion; conversational
    # completions arrive as one-message lists
    out = []
    for p, c, a, d in zip(prompts, completions, answer, difficulty):
        text = c[0]["content"] if isinstance(c, list) else c
        out.append(1.0 if str(a) in text else (None if d is None else 0.0))
    return out


def raises(prompts, completions, **kwargs):
    return [1.0 / (len(c) - 3) for c in completions]


def wrong_length(prompts, completions, **kwargs):
    return [1.0]


def not_a_number(prompts, completions, **kwargs):
    return ["high" for _ in completions]
'''


@pytest.fixture
def rewards(tmp_path: Path) -> Path:
    path = tmp_path / "rewards.py"
    path.write_text(REWARDS)
    return path


def _python(rewards: Path, name: str) -> PythonScorer:
    return PythonScorer(ScorerSpec(type="python", function=f"{rewards}:{name}"))


def test_python_scorer_uses_trls_reward_funcs_convention(rewards):
    scorer = _python(rewards, "convention")
    standard = [_item("It is 4.", 4, difficulty=1), _item("It is 5.", 4, difficulty=None)]
    assert scorer.score(standard) == [1.0, None]
    conversational = _item("It is 4.", 4, prompt=[{"role": "user", "content": "2+2?"}], difficulty=1)
    assert conversational.conversational and scorer.score([conversational]) == [1.0]
    assert _python(rewards, "length_reward").score([conversational]) == [8.0]


def test_python_scorer_failures_name_the_scorer_the_row_and_the_exception(rewards, tmp_path):
    with pytest.raises(ScorerError, match=r"scorer 'python'.*raised on row p.*ZeroDivisionError"):
        _python(rewards, "raises").score([_item("abcdef"), _item("abc")])
    with pytest.raises(ScorerError, match="returned 1 scores for 2 completions"):
        _python(rewards, "wrong_length").score([_item("a"), _item("b")])
    with pytest.raises(ScorerError, match="returned 'high' for row p"):
        _python(rewards, "not_a_number").score([_item("a")])
    with pytest.raises(ValueError, match="has no callable 'missing'"):
        _python(rewards, "missing")
    with pytest.raises(ValueError, match="no file"):
        PythonScorer(ScorerSpec(type="python", function=f"{tmp_path / 'nope.py'}:f"))
    with pytest.raises(ValueError, match="must be 'module:function'"):
        PythonScorer(ScorerSpec(type="python", function="rewards.py"))


def test_editing_the_user_function_changes_the_scorer_version(rewards):
    before = _python(rewards, "length_reward").version
    rewards.write_text(REWARDS + "\n# edited\n")
    assert _python(rewards, "length_reward").version != before


def test_weighted_combination_skips_scorers_that_do_not_apply(rewards):
    cfg = PipelineConfig.model_validate({"scoring": {"scorers": [
        {"type": "gsm8k", "weight": 1.0}, {"type": "python", "function": f"{rewards}:length_reward", "weight": 3.0}]}})
    scorers = build_scorers(cfg)
    scored = combine(scorers, {"gsm8k": 1.0, "python": 5.0})
    assert scored.score == pytest.approx((1.0 + 3 * 5.0) / 4) and scored.passed is True
    only_python = combine(scorers, {"gsm8k": None, "python": 5.0})
    assert only_python.score == 5.0 and only_python.passed is None  # the primary did not apply
    assert combine(scorers, {"gsm8k": None, "python": None}).score is None


def test_scores_are_cached_by_completion_and_scorer_version(rewards, tmp_path):
    calls: list[int] = []
    scorer = _python(rewards, "length_reward")
    original = scorer.score
    scorer.score = lambda items: (calls.append(len(items)), original(items))[1]  # type: ignore[method-assign]
    cache = ScoreCache(tmp_path / "scores.sqlite")
    items = [_item("aa"), _item("bbbb")]
    first = score_all([scorer], items, cache)
    again = score_all([scorer], items + [_item("c")], cache)
    assert calls == [2, 1] and again.cache_hits == 2 and again.computed == 1
    assert [s.score for s in again.scored] == [2.0, 4.0, 1.0] == [s.score for s in first.scored] + [1.0]


def test_a_config_names_its_scorers_and_rejects_bad_ones():
    with pytest.raises(Exception, match="a regex scorer needs 'pattern'"):
        load_config(None, ["scoring.scorers=[{type: regex}]"])
    with pytest.raises(Exception, match="scorer ids must be unique"):
        load_config(None, ["scoring.scorers=[{type: gsm8k}, {type: gsm8k}]"])
    with pytest.raises(Exception, match="unknown key 'scoring.scorers.0.wieght'"):
        load_config(None, ["scoring.scorers=[{type: gsm8k, wieght: 2}]"])


def test_a_reward_model_scorer_refuses_a_causal_lm_and_scores_with_a_sequence_classifier(tmp_path):
    """A causal LM directory has no trained score head: loaded as a classifier its head would be random
    noise that rounds and gates then optimize, so the scorer refuses it; a …ForSequenceClassification
    directory scores."""
    from transformers import AutoModelForSequenceClassification

    from alignflow.components.config import load_config
    from alignflow.components.modeling.checkpoints import load_tokenizer, materialize_base
    from alignflow.components.scoring.base import ScoringItem
    from alignflow.components.scoring.build import build_scorers
    from tests.conftest import tiny_overrides

    cfg = load_config(None, tiny_overrides(tmp_path))
    causal = materialize_base(cfg.model, cfg.seed, tmp_path / "state")

    def scorers(model_dir):
        return build_scorers(load_config(None, [*tiny_overrides(tmp_path),
                                                f"scoring.scorers=[{{type: reward_model, model: '{model_dir}'}}]"]))

    with pytest.raises(ValueError, match="sequence-classification.*causal LM has no trained score head"):
        scorers(causal)
    classifier = tmp_path / "classifier"
    AutoModelForSequenceClassification.from_pretrained(str(causal), num_labels=1).save_pretrained(str(classifier))
    load_tokenizer(causal).save_pretrained(str(classifier))
    [scorer] = scorers(classifier)
    scores = scorer.score([ScoringItem("p0", "What is 2 + 3?", "5", {})])
    assert len(scores) == 1 and isinstance(scores[0], float)
