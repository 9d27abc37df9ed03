"""Judge templates, strict judgment parsing and the judgment cache."""

import pytest

from components.judges.cache import JudgmentCache, judgment_key
from components.judges.parsing import parse_judgment
from components.judges.template import JudgeTemplate

T = JudgeTemplate()


@pytest.mark.parametrize("raw, score, rationale", [
    ("Rationale: 3 + 4 = 7 is right and the answer is stated.\nScore: 5", 5, "3 + 4 = 7 is right and the answer is stated."),
    ("The second step adds instead of subtracting.\n\n**Score: 2**", 2, "The second step adds instead of subtracting."),
    ("rationale: fine.\nscore: 4/5", 4, "fine."),
    ("Checks out. Score: 3\nSo again, Score: 3", 3, "Checks out."),  # repeated, same value
])
def test_well_formed_judgments_give_rationale_then_score(raw, score, rationale):
    j = parse_judgment(raw, T)
    assert (j.status, j.score, j.rationale, j.problem) == ("ok", score, rationale, None)


@pytest.mark.parametrize("raw, problem", [
    ("Looks correct to me.", "no 'Score: N' line"),
    ("Score: 4\n", "score without a rationale before it"),
    ("Rationale:\nScore: 4", "score without a rationale before it"),
    ("Good. Score: 4. On reflection, Score: 2", "conflicting scores ['2', '4']"),
    ("Good work. Score: 7", "score 7 outside 1..5"),
    ("Good work. Score: 0", "score 0 outside 1..5"),
    ("Half right. Score: 3.5", "score 3.5 is not an integer"),
])
def test_malformed_judgments_are_recorded_with_the_reason_and_never_scored(raw, problem):
    j = parse_judgment(raw, T)
    assert j.status == "malformed" and j.score is None and j.problem == problem and j.raw == raw


def test_template_hash_versions_wording_and_scale_and_bad_templates_fail():
    assert T.hash == JudgeTemplate().hash and len(T.hash) == 16
    assert JudgeTemplate(high=10).hash != T.hash
    assert JudgeTemplate(text=T.text.replace("a few sentences", "one sentence")).hash != T.hash
    with pytest.raises(ValueError, match="low < high"):
        JudgeTemplate(low=5, high=5)
    with pytest.raises(ValueError, match=r"\{rubric\}"):
        JudgeTemplate(text="Grade {context} {response}")


def test_template_renders_a_chat_prompt(tokenizer):
    prompt = T.render(tokenizer, "What is 3 + 4?", "7", "Correct final answer.")
    assert "What is 3 + 4?" in prompt and "an integer from 1 to 5" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_cache_hits_only_on_the_same_prompt_response_judge_and_template(tmp_path):
    key = judgment_key("p", "r", "judge-v1", T.hash)
    variants = [judgment_key("p2", "r", "judge-v1", T.hash), judgment_key("p", "r2", "judge-v1", T.hash),
                judgment_key("p", "r", "judge-v2", T.hash), judgment_key("p", "r", "judge-v1", JudgeTemplate(high=10).hash),
                judgment_key("p", "r", "judge-v1", T.hash, sample=1)]
    assert len({key, *variants}) == 6
    assert judgment_key("ab", "c", "j", "t") != judgment_key("a", "bc", "j", "t")  # no field-boundary collisions

    cache = JudgmentCache(tmp_path / "judgments.sqlite")
    judged = parse_judgment("Right. Score: 5", T)
    malformed = parse_judgment("no verdict", T)
    assert cache.get(key) is None
    cache.put(key, judged)
    cache.put(variants[0], malformed)
    assert cache.get(key) == judged and cache.get(variants[1]) is None
    assert (cache.hits, cache.misses) == (1, 2)
    cache.close()

    reopened = JudgmentCache(tmp_path / "judgments.sqlite")  # the next round
    assert len(reopened) == 2 and reopened.get(variants[0]) == malformed
