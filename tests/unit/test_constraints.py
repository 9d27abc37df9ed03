"""The instruction-following task: checkers on hand-written texts, conflicts, splits and references."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from alignflow.components.data import constraints as C

# --------------------------------------------------------------------------------------------
# Checkers: at least two passing and two failing hand-written texts per kind
# --------------------------------------------------------------------------------------------

PASSING: dict[str, list[tuple[str, dict]]] = {
    "word_count": [
        ("  one two three  \n", {"min_words": 3, "max_words": 3}),
        # Don't / panic / well-known / 3rd-rate / next / step
        ("Don't panic: well-known 3rd-rate next_step!", {"min_words": 6, "max_words": 6}),
        ("<<A Title>>\n\n* item one", {"min_words": 4, "max_words": 10}),
    ],
    "include_words": [
        ("The Soil is ready.", {"words": ["soil"]}),
        ("soil, compost!", {"words": ["soil", "compost"]}),
        ("The gardener's SOIL-testing kit", {"words": ["soil"]}),
    ],
    "exclude_words": [
        ("Everything is fine and fair.", {"words": ["thing", "very"]}),
        ("Justice was served.", {"words": ["just"]}),
        ("", {"words": ["very"]}),
    ],
    "lowercase": [
        ("hello world.", {}),
        ("  hello 123 \n", {}),
        ("```json\n{\"title\": \"a\"}\n```", {}),
    ],
    "uppercase": [
        ("HELLO.", {}),
        ("HELLO 2 YOU\n", {}),
        ("<<TITLE>>\n\n* ONE", {}),
    ],
    "bullet_count": [
        ("* a\n- b\n* c", {"n": 3}),
        ("Intro line\n  * a\n\t- b\nOutro line", {"n": 2}),
        ("* a\n- b   \n", {"n": 2}),
    ],
    "sentence_count": [
        ("Hello. How are you? Fine!", {"n": 3}),
        ("It costs 3.5 dollars. Ok", {"n": 2}),
        ("<<The Title>>\nOne here. Two here.", {"n": 2}),
        ("Wait... what?!", {"n": 2}),
    ],
    "first_word": [
        ("Honestly, yes.", {"word": "Honestly"}),
        ("  **honestly** it is", {"word": "Honestly"}),
        ("TODAY WE MEET.", {"word": "Today"}),
    ],
    "end_phrase": [
        ("Hi.\nTalk soon.  \n", {"phrase": "Talk soon."}),
        ("hi  TALK \n  SOON.", {"phrase": "Talk soon."}),
        ("Talk soon.", {"phrase": "Talk soon."}),
    ],
    "no_commas": [
        ("No commas here.", {}),
        ("Semicolons; dashes - and dots. Fine", {}),
    ],
    "json_keys": [
        ('{"title": "x", "summary": "y"}', {"keys": ["title", "summary"]}),
        ('```json\n{"title": "x"}\n```', {"keys": ["title"]}),
        ('  ```\n{"title": 1, "extra": 2}\n```  \n', {"keys": ["title"]}),
        ('```JSON\n{"a": [1, 2], "b": {"c": null}}\n```', {"keys": ["a", "b"]}),
    ],
    "title": [
        ("<<My Title>>\nbody", {}),
        ("  <<a>>  \n\nbody", {}),
        ("<<ONLY A TITLE>>", {}),
    ],
    "paragraph_count": [
        ("a\n\nb", {"n": 2}),
        ("a\n \t\nb\n\n\n\nc\n", {"n": 3}),
        ("<<T>>\n\nfirst\n\nsecond", {"n": 2}),
        ("<<T>>\nfirst\n\nsecond", {"n": 2}),
    ],
    "end_question": [
        ("Ready?", {}),
        ("Ready? Set?  \n", {}),
    ],
}

FAILING: dict[str, list[tuple[str, dict]]] = {
    "word_count": [
        ("one two three four", {"min_words": 1, "max_words": 3}),
        ("", {"min_words": 1, "max_words": 5}),
        ("... !!! ---", {"min_words": 1, "max_words": 5}),
    ],
    "include_words": [
        ("The topsoil is ready.", {"words": ["soil"]}),
        ("compost only", {"words": ["soil", "compost"]}),
    ],
    "exclude_words": [
        ("It was Very calm.", {"words": ["very"]}),
        ("Fine, just.", {"words": ["nice", "just"]}),
        ("A really-long day", {"words": ["really"]}),
    ],
    "lowercase": [
        ("Hello.", {}),
        ("123 !", {}),
        ("all lower but I", {}),
    ],
    "uppercase": [
        ("HELLO world", {}),
        ("...", {}),
        ("Hello.", {}),
    ],
    "bullet_count": [
        ("*a\n*b", {"n": 2}),  # no space after the marker
        ("* a\n**bold**\n-b", {"n": 3}),
        ("* a\n- b\n* c\n", {"n": 2}),
        ("1. a\n2. b", {"n": 2}),
    ],
    "sentence_count": [
        ("Wait... what?!", {"n": 3}),
        ("Mr. Smith left.", {"n": 1}),  # no abbreviation list: two sentences
        ("One. Two. Three.", {"n": 2}),
    ],
    "first_word": [
        ("Honest words", {"word": "Honestly"}),
        ("I honestly think so", {"word": "Honestly"}),
        ("", {"word": "Honestly"}),
    ],
    "end_phrase": [
        ("Talk soon. Bye.", {"phrase": "Talk soon."}),
        ("Let's talk soon!", {"phrase": "Talk soon."}),
        ("Stalk soon.", {"phrase": "Talk soon."}),
    ],
    "no_commas": [
        ("a, b", {}),
        ("a\uff0cb", {}),
    ],
    "json_keys": [
        ('Here: {"title": "x"}', {"keys": ["title"]}),
        ('{"Title": "x"}', {"keys": ["title"]}),
        ('["title"]', {"keys": ["title"]}),
        ('```json\n{"title": "x"}\n``` done', {"keys": ["title"]}),
        ('{"title": "x",}', {"keys": ["title"]}),
    ],
    "title": [
        ("Intro\n<<T>>", {}),
        ("<<>>\nbody", {}),
        ("<<T>> body on the same line", {}),
        ("<T>\nbody", {}),
    ],
    "paragraph_count": [
        ("a\nb", {"n": 2}),
        ("a\n\nb\n\n", {"n": 3}),
        ("<<T>>\n\nonly one", {"n": 2}),
    ],
    "end_question": [
        ("Ready?!", {}),
        ("Ready? Yes.", {}),
        ("Ready?)", {}),
    ],
}


def _cases(table: dict[str, list[tuple[str, dict]]]) -> list:
    return [
        pytest.param(kind, text, params, id=f"{kind}-{i}")
        for kind, rows in table.items()
        for i, (text, params) in enumerate(rows)
    ]


@pytest.mark.parametrize(("kind", "text", "params"), _cases(PASSING))
def test_checker_passes(kind: str, text: str, params: dict) -> None:
    assert C.CHECKERS[kind](text, **params) is True


@pytest.mark.parametrize(("kind", "text", "params"), _cases(FAILING))
def test_checker_fails(kind: str, text: str, params: dict) -> None:
    assert C.CHECKERS[kind](text, **params) is False


def test_every_kind_has_two_passing_and_two_failing_cases() -> None:
    assert set(PASSING) == set(FAILING) == set(C.CHECKERS)
    assert all(len(PASSING[k]) >= 2 and len(FAILING[k]) >= 2 for k in C.CHECKERS)


def test_registry_covers_at_least_twelve_kinds_with_named_checkers() -> None:
    assert len(C.KINDS) >= 12
    assert set(C.CHECKERS) == set(C.CONSTRAINT_TYPES)
    for kind, checker in C.CHECKERS.items():
        assert checker.__name__ == f"check_{kind}"
        assert getattr(C, f"check_{kind}") is checker


def test_hello_case_sensitivity_edge() -> None:
    assert not C.check_lowercase("Hello.") and C.check_lowercase("hello")
    assert C.check_first_word("hello", word="Hello") and C.check_include_words("Hello.", words=["hello"])
    assert C.check_uppercase("HELLO.") and not C.check_uppercase("hello")


def test_definitions_words_and_sentences() -> None:
    assert C.words("Don't stop: well-known, 3rd next_step!") == ["Don't", "stop", "well-known", "3rd", "next", "step"]
    assert C.split_sentences("<<T>>\nA one. B two!  C three") == ["A one.", "B two!", "C three"]
    assert C.split_paragraphs("<<T>>\n\nA\n\n\nB") == ["A", "B"]


# --------------------------------------------------------------------------------------------
# Constraint objects
# --------------------------------------------------------------------------------------------

SAMPLES = [
    C.WordCount(10, 20), C.IncludeWords(("soil",)), C.ExcludeWords(("very", "just")), C.Lowercase(), C.Uppercase(),
    C.BulletCount(3), C.SentenceCount(2), C.FirstWord("Today"), C.EndPhrase("Talk soon."), C.NoCommas(),
    C.JsonKeys(("title", "summary")), C.Title(), C.ParagraphCount(2), C.EndQuestion(),
]


def test_constraint_objects_round_trip_and_describe() -> None:
    assert {c.kind for c in SAMPLES} == set(C.KINDS)
    for c in SAMPLES:
        row = c.to_dict()
        assert json.loads(json.dumps(row)) == row and row["kind"] == c.kind
        assert C.constraint_from_dict(row) == c
        text = c.describe()
        assert text and text.endswith(".") and text[0].isupper()
        with pytest.raises(Exception):  # frozen
            c.__setattr__("kind", "other")


def test_constraint_validation() -> None:
    with pytest.raises(ValueError):
        C.WordCount(20, 10)
    with pytest.raises(ValueError):
        C.BulletCount(0)
    with pytest.raises(ValueError):
        C.IncludeWords(())
    with pytest.raises(ValueError):
        C.IncludeWords(("two words",))
    with pytest.raises(ValueError):
        C.constraint_from_dict({"kind": "nope"})
    included = C.constraint_from_dict({"kind": "include_words", "words": ["a", "b"]})
    assert isinstance(included, C.IncludeWords) and included.words == ("a", "b")


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def test_score_constraints_fraction_arithmetic() -> None:
    cons = [{"kind": "lowercase"}, {"kind": "no_commas"}, {"kind": "end_question"}]
    out = C.score_constraints("hello, there?", cons)
    assert out == {"fraction": pytest.approx(2 / 3), "all_met": False,
                   "per_kind": {"lowercase": True, "no_commas": False, "end_question": True}}
    assert C.score_constraints("hello there?", cons) == {
        "fraction": 1.0, "all_met": True, "per_kind": {"lowercase": True, "no_commas": True, "end_question": True}}
    none = C.score_constraints("Hello, there.", cons)
    assert none["fraction"] == 0.0 and none["all_met"] is False and not any(none["per_kind"].values())
    assert C.score_constraints("anything", []) == {"fraction": 1.0, "all_met": True, "per_kind": {}}
    objects = C.score_constraints("hi", [C.Lowercase(), C.WordCount(2, 5)])
    assert objects["fraction"] == 0.5 and objects["per_kind"] == {"lowercase": True, "word_count": False}
    dup = C.score_constraints("soil", [C.IncludeWords(("soil",)), C.IncludeWords(("compost",))])
    assert dup["fraction"] == 0.5 and dup["per_kind"] == {"include_words": False}


# --------------------------------------------------------------------------------------------
# Conflicts
# --------------------------------------------------------------------------------------------


def test_conflict_table_shape() -> None:
    for pair, reason in C.CONFLICTS.items():
        assert len(pair) == 2 and pair <= set(C.KINDS) and reason
    assert frozenset(("lowercase", "uppercase")) in C.CONFLICTS
    assert frozenset(("json_keys", "no_commas")) in C.CONFLICTS


def test_conflicting_pairs_are_rejected_everywhere() -> None:
    combos = C.all_combinations(3)
    for pair in C.CONFLICTS:
        assert not C.is_compatible(pair)
        assert not any(pair <= set(combo) for combo in combos)
        with pytest.raises(ValueError):
            C.make_constraint_problem(random.Random(0), sorted(pair), 0, "x")
    assert not C.is_compatible(["lowercase", "lowercase"])
    # every non-conflicting pair is offered
    offered = {c for c in combos if len(c) == 2}
    for a, b in itertools.combinations(sorted(C.KINDS), 2):
        assert ((a, b) in offered) == (frozenset((a, b)) not in C.CONFLICTS)


def test_lowercase_and_uppercase_truly_conflict() -> None:
    for text in ["hello", "HELLO", "Hello", "123", "hello WORLD", ""]:
        assert not (C.check_lowercase(text) and C.check_uppercase(text))


def test_generated_problems_respect_the_conflict_table() -> None:
    ds = C.generate_constraints_dataset(5, 200, 200, 100)
    for rows in ds.values():
        for row in rows:
            kinds = [c["kind"] for c in row.constraints]
            assert 1 <= len(kinds) <= 3 and len(set(kinds)) == len(kinds)
            assert C.is_compatible(kinds) and not C.conflicting_pairs(kinds)


# --------------------------------------------------------------------------------------------
# Generation and splits
# --------------------------------------------------------------------------------------------


def _dump(ds: dict[str, list[C.ConstraintProblem]]) -> dict[str, list[dict]]:
    return {k: [r.to_dict() for r in v] for k, v in ds.items()}


def test_generator_is_deterministic_under_a_seed() -> None:
    a = C.generate_constraints_dataset(11, 60, 60, 40)
    b = C.generate_constraints_dataset(11, 60, 60, 40)
    assert _dump(a) == _dump(b)
    assert C.split_combinations(11) == C.split_combinations(11)
    assert [C.reference_response(r) for r in a["sft"]] == [C.reference_response(r) for r in b["sft"]]


def test_different_seeds_differ() -> None:
    a, b = C.generate_constraints_dataset(1, 60, 60, 40), C.generate_constraints_dataset(2, 60, 60, 40)
    for split in ("sft", "train", "eval"):
        assert [r.prompt for r in a[split]] != [r.prompt for r in b[split]]
    assert C.split_combinations(1)[1] != C.split_combinations(2)[1]


def test_split_sizes_and_ids() -> None:
    ds = C.generate_constraints_dataset(0, 30, 20, 10)
    assert {k: len(v) for k, v in ds.items()} == {"sft": 30, "train": 20, "eval": 10}
    ids = [r.id for rows in ds.values() for r in rows]
    assert len(set(ids)) == len(ids)
    for split, rows in ds.items():
        for i, r in enumerate(rows):
            assert r.id.startswith(f"{split}-{i:05d}-")
            assert C.ConstraintProblem.from_dict(json.loads(json.dumps(r.to_dict()))) == r


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_eval_combinations_are_disjoint_from_train_and_sft(seed: int) -> None:
    train_combos, eval_combos = C.split_combinations(seed)
    assert eval_combos and not set(train_combos) & set(eval_combos)
    assert set(train_combos) | set(eval_combos) == set(C.all_combinations(3))
    assert all(len(c) >= 2 for c in eval_combos)
    assert {k for c in train_combos for k in c} == set(C.KINDS)  # every kind is still trained on
    ds = C.generate_constraints_dataset(seed, 300, 300, 150)
    eval_used = {r.kinds for r in ds["eval"]}
    seen = {r.kinds for r in ds["sft"]} | {r.kinds for r in ds["train"]}
    assert eval_used <= set(eval_combos) and seen <= set(train_combos)
    assert not eval_used & seen
    assert len(eval_used) > 10  # eval covers many held-out combinations, not one


def test_problem_prompt_lists_its_constraints() -> None:
    for row in C.generate_constraints_dataset(4, 50, 0, 20)["sft"]:
        form = C.FORMS_BY_NAME[row.form]
        topic = C.TOPICS_BY_NAME[row.topic]
        assert row.prompt.startswith(form.instruction.format(topic=topic.phrase))
        for c in row.constraints:
            assert C.constraint_from_dict(c).describe() in row.prompt


def test_generator_covers_topics_forms_and_kinds() -> None:
    assert len(C.TOPICS) >= 12 and len(C.FORMS) >= 6
    ds = C.generate_constraints_dataset(3, 400, 0, 100)
    rows = ds["sft"] + ds["eval"]
    assert {r.topic for r in rows} == set(C.TOPICS_BY_NAME)
    assert {r.form for r in rows} == set(C.FORMS_BY_NAME)
    assert {k for r in rows for k in r.kinds} == set(C.KINDS)
    assert {len(r.constraints) for r in ds["sft"]} == {1, 2, 3}


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 42])
def test_every_reference_response_meets_all_its_constraints(seed: int) -> None:
    ds = C.generate_constraints_dataset(seed, 400, 200, 200)
    for rows in ds.values():
        for row in rows:
            ref = C.reference_response(row)
            score = C.score_constraints(ref, row.constraints)
            assert score["all_met"], (row.prompt, ref, score)
            assert score["fraction"] == 1.0


def test_reference_response_is_deterministic_and_varies() -> None:
    rows = C.generate_constraints_dataset(9, 100, 0, 0)["sft"]
    refs = [C.reference_response(r) for r in rows]
    assert refs == [C.reference_response(r) for r in rows]
    assert len(set(refs)) > 90


def test_word_ranges_sometimes_need_padding() -> None:
    """The range's bottom is sometimes above the unpadded reference, so padding is exercised."""
    padded = 0
    for row in C.generate_constraints_dataset(0, 600, 0, 0)["sft"]:
        cons = [C.constraint_from_dict(c) for c in row.constraints]
        wc = [c for c in cons if isinstance(c, C.WordCount)]
        if wc:
            base = C._render_reference(C.TOPICS_BY_NAME[row.topic], C.FORMS_BY_NAME[row.form],
                                       [c for c in cons if c.kind != "word_count"])
            padded += C.count_words(base) < wc[0].min_words
    assert padded >= 5


# --------------------------------------------------------------------------------------------
# Content hygiene: the pools cannot break the constraints they are used under
# --------------------------------------------------------------------------------------------


def _template_texts() -> list[str]:
    texts = [*C.END_PHRASES, *C.CLOSING_QUESTIONS, *C.INCLUDE_SENTENCES, C.INCLUDE_CLAUSE, *C.FILLER_SENTENCES,
             *C.FILLER_CLAUSES, *C.FIRST_WORD_OPENERS, *C.FIRST_WORD_OPENERS.values(), *C.JSON_KEY_POOL,
             "Warm and practical.", "Calm and hopeful.", "Anyone curious about {topic}."]
    for t in C.TOPICS:
        texts += [t.phrase, t.title, *t.keywords, *t.points]
    for f in C.FORMS:
        texts += list(f.openers)
    return texts


def test_template_text_has_no_commas_and_no_excluded_words() -> None:
    for text in _template_texts():
        assert C.check_no_commas(text), text
        assert C.check_exclude_words(text, words=C.EXCLUDE_POOL), text


def test_sentence_pools_are_single_sentences() -> None:
    singles = [*C.END_PHRASES, *C.CLOSING_QUESTIONS, *C.FILLER_SENTENCES, *C.FIRST_WORD_OPENERS.values(),
               *(p for t in C.TOPICS for p in t.points), *(o for f in C.FORMS for o in f.openers)]
    for text in singles:
        assert len(C.split_sentences(text.format(topic="a test topic"))) == 1, text
    for word, opener in C.FIRST_WORD_OPENERS.items():
        assert C.check_first_word(opener.format(topic="x"), word=word)
    assert all(not p.endswith("?") for p in C.END_PHRASES)  # why end_phrase conflicts with end_question
