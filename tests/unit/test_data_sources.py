"""Loading local sources in every file type, mixing by fraction, held-out splits, data check."""

from __future__ import annotations

import random

import pytest
from pydantic import BaseModel, ValidationError

from alignflow.components.data.formats import DataFormatError, Example, prompt_id
from alignflow.components.data.sources import (
    SourceSpec,
    check_sources,
    contamination,
    fraction_count,
    load_role,
    read_source,
    split_heldout,
    take_fraction,
)
from tests.support.datafiles import WRITERS, write_csv, write_json, write_jsonl, write_parquet, write_saved
from tests.support.messages import A, S, U


def pc_rows(n: int, start: int = 0) -> list[dict]:
    return [{"prompt": f"What is {i}+{i}?", "completion": f"It is {2 * i}.", "answer": 2 * i}
            for i in range(start, start + n)]


def load(tmp_path, specs, role="sft", seed=0, **kwargs) -> list[Example]:
    return load_role(specs, role, seed, cache_dir=tmp_path / "hf-cache", **kwargs)


def load_error(tmp_path, specs, role="sft", **kwargs) -> str:
    with pytest.raises(DataFormatError) as info:
        load(tmp_path, specs, role, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------------------- file types


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet", "arrow", "csv"])
def test_every_file_type_loads_prompt_completion_rows(tmp_path, kind):
    path = WRITERS[kind](tmp_path / f"train.{kind}", pc_rows(3))
    examples = load(tmp_path, [{"source": str(path)}])
    assert [e.prompt for e in examples] == ["What is 0+0?", "What is 1+1?", "What is 2+2?"]
    assert [e.completion for e in examples] == ["It is 0.", "It is 2.", "It is 4."]
    typed = (lambda n: str(n)) if kind == "csv" else (lambda n: n)  # a CSV cell is text
    assert [e.columns for e in examples] == [{"answer": typed(0)}, {"answer": typed(2)}, {"answer": typed(4)}]
    assert [e.origin for e in examples] == [f"{path}:row {n}" for n in (1, 2, 3)]
    assert any((tmp_path / "hf-cache").iterdir())  # datasets wrote its cache where it was told


def test_save_to_disk_dataset_and_datasetdict_dirs(tmp_path):
    convo = [{"messages": [S("Be brief."), U("Hi"), A("Hello.")], "tag": "a"},
             {"messages": [S("Be brief."), U("Bye"), A("Bye.")], "tag": "b"}]
    single = write_saved(tmp_path / "single", convo)
    examples = load(tmp_path, [{"source": str(single)}])
    assert examples[0].prompt == [S("Be brief."), U("Hi")] and examples[0].completion == [A("Hello.")]
    assert examples[1].columns == {"tag": "b"}
    assert examples[1].origin == f"{single}:row 2"

    both = write_saved(tmp_path / "dict", {"train": pc_rows(3), "test": pc_rows(2, start=10)})
    test = load(tmp_path, [{"source": str(both), "split": "test"}])
    assert [e.prompt for e in test] == ["What is 10+10?", "What is 11+11?"]
    assert load_error(tmp_path, [{"source": str(both)}]) == (
        f"data.sources.sft[0].split: {both} is a DatasetDict with splits [train, test]: choose one with split:")
    assert load_error(tmp_path, [{"source": str(both), "split": "validation"}]) == (
        f"data.sources.sft[0].split: no split 'validation' in {both} (available: train, test)")
    assert load_error(tmp_path, [{"source": str(single), "split": "train"}]) == (
        f"data.sources.sft[0].split: {single} is a single Dataset, not a DatasetDict: drop split:")

    only = write_saved(tmp_path / "only", {"train": pc_rows(2)})
    assert len(load(tmp_path, [{"source": str(only)}])) == 2


def test_jsonl_rows_are_numbered_by_line(tmp_path):
    path = tmp_path / "gaps.jsonl"
    rows = pc_rows(3)
    rows[2]["completion"] = ""
    import json

    path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n   \n" + json.dumps(rows[2]) + "\n")
    assert load_error(tmp_path, [{"source": str(path)}]) == f"{path}: row 5: field 'completion': empty response"


@pytest.mark.parametrize("kind", ["jsonl", "json"])
def test_utf8_bom_file_loads(tmp_path, kind):
    writer = write_jsonl if kind == "jsonl" else write_json
    path = writer(tmp_path / f"bom.{kind}", [{"prompt": "Grüße?", "completion": "Hallo."}] + pc_rows(1), bom=True)
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    examples = load(tmp_path, [{"source": str(path)}])
    assert [e.prompt for e in examples] == ["Grüße?", "What is 0+0?"]
    assert examples[0].columns == {"answer": None}  # no '\ufeffprompt' column; absent keys read as null
    assert examples[1].columns == {"answer": 0}


@pytest.mark.parametrize("kind", ["jsonl", "json"])
def test_utf8_bom_file_loads_when_datasets_reader_fails(tmp_path, kind, monkeypatch):
    """The fallback reader (utf-8-sig) for when datasets' json loader gives up."""
    import datasets

    def broken(*args, **kwargs):
        raise ValueError("simulated reader failure")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    writer = write_jsonl if kind == "jsonl" else write_json
    path = writer(tmp_path / f"bom.{kind}", [{"prompt": "Grüße?", "completion": "Hallo."}], bom=True)
    [ex] = load(tmp_path, [{"source": str(path)}])
    assert (ex.prompt, ex.completion, ex.columns) == ("Grüße?", "Hallo.", {})
    parquet = write_parquet(tmp_path / "x.parquet", pc_rows(1))
    assert load_error(tmp_path, [{"source": str(parquet)}]) == (
        f"data.sources.sft[0].source: cannot read {parquet}: ValueError: simulated reader failure")


def test_bom_csv_loads(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfprompt,completion\nQ,A\n")
    assert [(e.prompt, e.completion) for e in load(tmp_path, [{"source": str(path)}])] == [("Q", "A")]


def test_csv_cells_stay_text_whatever_they_look_like(tmp_path):
    # pandas would read the completion column as ints (007 -> 7) and an answer column with a gap as floats
    path = write_csv(tmp_path / "numbers.csv", [
        {"prompt": "2 + 3?", "completion": "5", "answer": "5"},
        {"prompt": "Agent?", "completion": "007", "answer": ""},
    ])
    examples = load(tmp_path, [{"source": str(path)}])
    assert [(e.prompt, e.completion) for e in examples] == [("2 + 3?", "5"), ("Agent?", "007")]
    assert examples[0].columns == {"answer": "5"} and examples[1].columns.get("answer") in (None, "")


def test_csv_without_a_usable_header_is_named(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert load_error(tmp_path, [{"source": str(empty)}]) == (
        f"data.sources.sft[0].source: {empty} has no header row (a CSV source names its columns in its first line)")
    twice = tmp_path / "twice.csv"
    twice.write_text("prompt,completion,prompt\nQ,A,R\n")
    assert load_error(tmp_path, [{"source": str(twice)}]) == (
        f"{twice}: row 1: the header names column(s) ['prompt'] more than once")


def test_invalid_json_line_and_non_object_rows_name_their_row(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", \n')
    assert load_error(tmp_path, [{"source": str(path)}]) == (
        f"{path}: row 2: not valid JSON (Expecting property name enclosed in double quotes)")
    path = tmp_path / "list.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n[1, 2]\n')
    assert load_error(tmp_path, [{"source": str(path)}]) == f"{path}: row 2: expected a JSON object, got list"


# ------------------------------------------------------------------------- formats in files


def test_implicit_prompt_pairs_from_parquet(tmp_path):
    shared = [S("You are terse."), U("2+2?"), A("4"), U("and 3+3?")]
    rows = [{"chosen": shared + [A("6")], "rejected": shared + [A("7")], "id": 1},
            {"chosen": [U("Sky?"), A("Blue.")], "rejected": [U("Sky?"), A("Green.")], "id": 2}]
    path = write_parquet(tmp_path / "pairs.parquet", rows)
    examples = load(tmp_path, [{"source": str(path)}], role="preferences")
    assert examples[0].prompt == shared and examples[0].chosen == [A("6")] and examples[0].rejected == [A("7")]
    assert examples[1].prompt == [U("Sky?")] and examples[1].columns == {"id": 2}


def test_sharegpt_json_and_alpaca_csv(tmp_path):
    sg = write_json(tmp_path / "sg.json", [
        {"conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi"},
                           {"from": "gpt", "value": "Hello!"}]},
        {"conversations": [{"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye!"}]},
    ])
    examples = load(tmp_path, [{"source": str(sg)}])
    assert examples[0].prompt == [S("Be kind."), U("Hi")] and examples[1].completion == [A("Bye!")]

    alpaca = write_csv(tmp_path / "alpaca.csv", [
        {"instruction": "Add.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say hi.", "input": "", "output": "hi"},
    ])
    examples = load(tmp_path, [{"source": str(alpaca)}])
    assert [e.prompt for e in examples] == ["Add.\n\n2 and 3", "Say hi."]
    assert [e.completion for e in examples] == ["5", "hi"]


def test_conversational_messages_with_system_turn_in_jsonl_with_ragged_keys(tmp_path):
    # the second row's message has an extra key: datasets' reader fills it with null elsewhere
    path = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [S("sys"), U("q1"), A("a1")]},
        {"messages": [U("q2"), {"role": "assistant", "content": "a2", "name": None}]},
    ])
    examples = load(tmp_path, [{"source": str(path)}])
    assert examples[0].prompt == [S("sys"), U("q1")] and examples[1].completion == [A("a2")]


def test_column_mapping_from_a_source_spec(tmp_path):
    path = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "1+1?", "solution": "2", "ground_truth": 2}])
    spec = SourceSpec(source=str(path), columns={"question": "prompt", "solution": "completion",
                                                  "ground_truth": "answer"})
    [ex] = load(tmp_path, [spec])
    assert (ex.prompt, ex.completion, ex.columns) == ("1+1?", "2", {"answer": 2})
    bad = SourceSpec(source=str(path), columns={"query": "prompt"})
    assert load_error(tmp_path, [bad]) == (
        f"{path}: field 'query' (mapped to 'prompt'): missing column (columns: [question, solution, ground_truth])")


def test_forced_format(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q", "completion": "A", "label": True}])
    [ex] = load(tmp_path, [{"source": str(path), "format": "prompt_completion"}])
    assert ex.completion == "A" and ex.columns == {"label": True}
    with pytest.raises(ValidationError, match="unknown format 'chatml'"):
        SourceSpec(source=str(path), format="chatml")


def test_a_forced_format_that_does_not_fit_is_one_error_not_one_per_row(tmp_path):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": f"Q{i}", "completion": f"A{i}"} for i in range(30)])
    report = check_sources({"sft": [{"source": str(path), "format": "messages"}]}, cache_dir=tmp_path / "c")
    assert not report.ok and len(report.errors) == 1, report.errors
    assert report.errors[0].startswith(f"{path}: rows 1–3: field 'messages'")
    assert report.errors[0].endswith("format messages (forced) does not fit this source (columns: "
                                     "[prompt, completion]); remove format: to detect it")
    # rows that fail differently, or a file with good rows, still get an error per bad row
    rows = [{"prompt": "Q", "completion": "A"}, {"prompt": "Q", "completion": ""}, {"prompt": "", "completion": "A"}]
    mixed = write_jsonl(tmp_path / "mixed.jsonl", rows)
    report = check_sources({"sft": [{"source": str(mixed), "format": "prompt_completion"}]}, cache_dir=tmp_path / "c")
    assert [e.split(": ")[1] for e in report.errors] == ["row 2", "row 3"]


def test_undetectable_source_names_the_file(tmp_path):
    path = write_jsonl(tmp_path / "lm.jsonl", [{"text": "once upon a time"}])
    assert load_error(tmp_path, [{"source": str(path)}]) == (
        f"{path}: columns [text]: a language-modeling 'text' column has no prompt to align on; provide "
        "prompt/completion (or messages) columns, or rename them with columns:")


# --------------------------------------------------------------------------------- errors


def test_missing_file_names_the_path_and_the_config_key(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", pc_rows(2))
    missing = tmp_path / "nope.jsonl"
    assert load_error(tmp_path, [{"source": str(good)}, {"source": str(missing)}], role="prompts") == (
        f"data.sources.prompts[1].source: file not found: {missing}")
    assert load_error(tmp_path, [{"source": str(missing)}], key_prefix="cfg.eval_sources") == (
        f"cfg.eval_sources[0].source: file not found: {missing}")


def test_unsupported_file_and_plain_directory(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("hi")
    assert load_error(tmp_path, [{"source": str(txt)}]) == (
        f"data.sources.sft[0].source: unsupported file type '.txt' for {txt} (expected .jsonl, .json, .parquet, .csv, "
        ".arrow or a save_to_disk directory)")
    folder = tmp_path / "folder"
    folder.mkdir()
    assert load_error(tmp_path, [{"source": str(folder)}]) == (
        f"data.sources.sft[0].source: {folder} is a directory but not a Dataset/DatasetDict save_to_disk directory")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert load_error(tmp_path, [{"source": str(empty)}]).startswith("data.sources.sft[0].source: ")


def test_every_row_is_validated_even_rows_the_fraction_drops(tmp_path):
    rows = pc_rows(50)
    rows[37]["completion"] = "   "
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    # whichever 5 rows the fraction keeps, row 38 is still checked
    assert load_error(tmp_path, [{"source": str(path), "fraction": 0.1}]) == (
        f"{path}: row 38: field 'completion': empty response")


def test_a_bad_second_source_fails_before_anything_is_returned(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", pc_rows(3))
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "Q", "chosen": "A", "rejected": "A"}])
    assert load_error(tmp_path, [{"source": str(good)}, {"source": str(bad)}], role="sft") == (
        f"{bad}: row 1: field 'rejected': identical to 'chosen' (a pair needs two different responses)")


def test_an_invalid_spec_dict_is_named_by_its_key(tmp_path):
    assert load_error(tmp_path, [{"source": "x.jsonl", "fraction": 0}], role="eval") == (
        "data.sources.eval[0]: invalid source spec: fraction: Input should be greater than 0")
    assert load_error(tmp_path, [{"source": "x.jsonl", "weight": 2}], role="eval") == (
        "data.sources.eval[0]: invalid source spec: weight: Extra inputs are not permitted")


def test_arrow_ipc_file_layout_loads_too(tmp_path):
    import pyarrow as pa

    table = pa.Table.from_pylist(pc_rows(2))
    path = tmp_path / "file.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    assert [e.prompt for e in load(tmp_path, [{"source": str(path)}])] == ["What is 0+0?", "What is 1+1?"]


def test_role_is_checked(tmp_path):
    with pytest.raises(ValueError, match="unknown role 'train'"):
        load(tmp_path, [], role="train")


# ------------------------------------------------------------------------------- builtins


class Problem(BaseModel):
    question: str
    solution: str
    answer: int


def arithmetic(seed: int, n: int = 5, offset: int = 0):
    rng = random.Random(seed)
    for _ in range(n):
        a, b = rng.randint(0, 50) + offset, rng.randint(0, 50)
        yield Problem(question=f"{a}+{b}?", solution=f"{a + b}", answer=a + b)


def test_builtin_sources_go_through_a_registry(tmp_path):
    spec = {"source": "builtin:arithmetic", "params": {"n": 4, "offset": 100},
            "columns": {"question": "prompt", "solution": "completion"}}
    first = load(tmp_path, [spec], seed=3, builtins={"arithmetic": arithmetic})
    assert len(first) == 4
    assert all(int(str(e.prompt).split("+")[0]) >= 100 for e in first)
    assert [e.columns["answer"] for e in first] == [int(str(e.completion)) for e in first]
    assert first[0].origin == "builtin:arithmetic:row 1"
    again = load(tmp_path, [spec], seed=3, builtins={"arithmetic": arithmetic})
    assert [e.id for e in again] == [e.id for e in first]
    other = load(tmp_path, [spec], seed=4, builtins={"arithmetic": arithmetic})
    assert [e.id for e in other] != [e.id for e in first]
    assert load_error(tmp_path, [{"source": "builtin:gsm8k"}], builtins={"arithmetic": arithmetic}) == (
        "data.sources.sft[0].source: unknown builtin 'gsm8k' (known: arithmetic)")


# -------------------------------------------------------------------------------- mixtures


@pytest.mark.parametrize(("n", "fraction", "kept"), [
    (100, 0.29, 29),  # 0.29 * 100 = 28.999999999999996 in floating point
    (10, 0.7, 7),
    (3, 0.5, 1),  # floor, as alignment-handbook's int(frac * len)
    (9, 0.99, 8),
    (10, 0.01, 1),  # a positive fraction never empties a source
    (7, 1.0, 7),
    (0, 0.5, 0),
])
def test_fraction_rounding(n, fraction, kept):
    assert fraction_count(n, fraction) == kept


def test_fraction_must_be_in_0_1():
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValidationError):
            SourceSpec(source="x.jsonl", fraction=bad)


def test_mixture_is_deterministic_and_seeded(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", pc_rows(40))
    b = write_parquet(tmp_path / "b.parquet", pc_rows(20, start=100))
    specs = [{"source": str(a), "fraction": 0.25}, {"source": str(b), "fraction": 0.5}]
    first = load(tmp_path, specs, seed=7)
    assert len(first) == 10 + 10
    assert all(e.origin.startswith(str(a)) for e in first[:10])  # concatenated in spec order
    assert all(e.origin.startswith(str(b)) for e in first[10:])
    rows_a = [int(e.origin.rsplit(" ", 1)[1]) for e in first[:10]]
    assert rows_a == sorted(rows_a)  # a subset keeps file order
    assert [e.id for e in load(tmp_path, specs, seed=7)] == [e.id for e in first]
    assert {e.id for e in load(tmp_path, specs, seed=8)} != {e.id for e in first}


def test_a_sources_subset_ignores_the_other_sources_and_their_order(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", pc_rows(40))
    b = write_jsonl(tmp_path / "b.jsonl", pc_rows(40, start=100))
    c = write_jsonl(tmp_path / "c.jsonl", pc_rows(5, start=500))
    spec_a = {"source": str(a), "fraction": 0.3}
    alone = {e.id for e in load(tmp_path, [spec_a], seed=1)}
    mixed = load(tmp_path, [{"source": str(c)}, {"source": str(b), "fraction": 0.5}, spec_a], seed=1)
    assert {e.id for e in mixed if e.origin.startswith(str(a))} == alone
    assert len(mixed) == 5 + 20 + 12


def test_larger_fractions_keep_the_smaller_subsets():
    examples = [Example(prompt=f"p{i}", origin=f"f:row {i + 1}") for i in range(30)]
    small = take_fraction(examples, SourceSpec(source="f", fraction=0.2), seed=5)
    large = take_fraction(examples, SourceSpec(source="f", fraction=0.6), seed=5)
    assert len(small) == 6 and len(large) == 18
    assert {e.id for e in small} < {e.id for e in large}


# ------------------------------------------------------------------- held-out split, contamination


def test_split_is_by_prompt_hash_not_position(tmp_path):
    rows = pc_rows(200)
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    one = load(tmp_path, [{"source": str(write_jsonl(tmp_path / "one.jsonl", rows))}])
    two = load(tmp_path, [{"source": str(write_parquet(tmp_path / "two.parquet", shuffled))}])
    train1, eval1 = split_heldout(one, 0.2, seed=0)
    train2, eval2 = split_heldout(two, 0.2, seed=0)
    assert {e.id for e in eval1} == {e.id for e in eval2}
    assert {e.id for e in train1} == {e.id for e in train2}
    assert len(train1) + len(eval1) == 200
    assert 20 <= len(eval1) <= 60  # 0.2 in expectation
    assert [e.id for e in eval1] == [e.id for e in one if e in eval1]  # input order kept
    _, other_seed = split_heldout(one, 0.2, seed=1)
    assert {e.id for e in other_seed} != {e.id for e in eval1}
    assert split_heldout(one, 0.0, seed=0) == (one, [])
    with pytest.raises(ValueError, match=r"eval_fraction must be in \[0, 1\)"):
        split_heldout(one, 1.0, seed=0)


def test_rows_sharing_a_prompt_land_on_the_same_side():
    examples = [Example(prompt=f"p{i % 25}", completion=f"c{i}", origin=f"f:row {i + 1}") for i in range(100)]
    train, held = split_heldout(examples, 0.3, seed=2)
    assert held and train
    assert contamination(train, held) == []


def test_contamination_report_across_formats(tmp_path):
    train_file = write_jsonl(tmp_path / "train.jsonl", pc_rows(10))
    eval_file = write_json(tmp_path / "eval.json", [
        {"instruction": "What is 3+3?", "output": "6"},  # Alpaca, same canonical prompt as train row 4
        {"instruction": "What is 7+7?", "input": "", "output": "14"},
        {"instruction": "What is 99+99?", "output": "198"},
    ])
    train = load(tmp_path, [{"source": str(train_file)}], role="sft")
    held = load(tmp_path, [{"source": str(eval_file)}], role="eval")
    assert contamination(train, held) == sorted([prompt_id("What is 3+3?"), prompt_id("What is 7+7?")])
    assert contamination(train, []) == []


# ------------------------------------------------------------------------------------- check


def test_check_collects_errors_across_files(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", pc_rows(3))
    bad_rows = pc_rows(4)
    bad_rows[1]["completion"] = ""
    bad_rows[3]["prompt"] = 7
    bad = write_jsonl(tmp_path / "bad.jsonl", bad_rows)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"chosen": [U("q"), A("x")], "rejected": [U("r"), A("y")]}])
    missing = tmp_path / "missing.parquet"
    report = check_sources({"sft": [{"source": str(good)}, {"source": str(bad)}],
                            "preferences": [{"source": str(pairs)}, {"source": str(missing)}],
                            "eval": [{"source": str(good), "fraction": 3}]},
                           cache_dir=tmp_path / "hf-cache")
    assert report.errors == [
        f"{bad}: row 2: field 'completion': empty response",
        f"{bad}: row 4: field 'prompt': expected a string or a list of messages, got a number (7)",
        f"{pairs}: row 1: field 'chosen': implicit preference with no common prefix: chosen and rejected share no "
        "leading message to use as the prompt",
        f"data.sources.preferences[1].source: file not found: {missing}",
        "data.sources.eval[0]: invalid source spec: fraction: Input should be less than or equal to 1",
    ]
    assert report.ok is False and report.exit_code == 1 and report.truncated is False
    assert [(s.key, s.format, s.rows, s.errors) for s in report.sources] == [
        ("data.sources.sft[0]", "prompt_completion", 3, 0),
        ("data.sources.sft[1]", "prompt_completion", 4, 2),
        ("data.sources.preferences[0]", "implicit_preference", 1, 1),
        ("data.sources.preferences[1]", None, 0, 1),
        ("data.sources.eval[0]", None, 0, 1),
    ]
    assert "FAILED: 5 errors" in report.render()


def test_check_stops_at_20_errors_and_passes_clean_data(tmp_path):
    rows = pc_rows(30)
    for row in rows:
        row["completion"] = " "
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    other = write_jsonl(tmp_path / "other.jsonl", rows)
    report = check_sources({"sft": [{"source": str(bad)}, {"source": str(other)}]}, cache_dir=tmp_path / "c")
    assert len(report.errors) == 20 and report.truncated is True and report.exit_code == 1
    assert [(s.source, s.rows, s.errors) for s in report.sources] == [(str(bad), 30, 20)]  # stopped at the cap
    assert report.errors[-1] == f"{bad}: row 20: field 'completion': empty response"
    assert "stopped after 20 errors" in report.render()

    good = write_jsonl(tmp_path / "good.jsonl", pc_rows(3))
    clean = check_sources({"prompts": [{"source": str(good)}]}, cache_dir=tmp_path / "c")
    assert clean.ok and clean.exit_code == 0 and clean.errors == [] and clean.render().endswith("OK")
    unknown = check_sources({"judge": [{"source": str(good)}]}, cache_dir=tmp_path / "c")
    assert unknown.errors == ["data.sources.judge: unknown role 'judge' (expected one of sft, prompts, preferences, "
                              "eval)"]


def test_read_source_uses_the_given_cache_dir(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", pc_rows(2))
    raw = read_source(SourceSpec(source=str(path)), key="k", cache_dir=tmp_path / "mine")
    assert raw.column_names == ["prompt", "completion", "answer"] and raw.row_numbers == [1, 2]
    assert any((tmp_path / "mine").iterdir())


def test_a_file_that_is_not_utf8_is_named_with_its_row(tmp_path):
    from alignflow.components.data.formats import DataFormatError
    from alignflow.components.data.sources import read_source

    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"prompt": "a"}\n{"prompt": "café"}\n'.encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin1.jsonl: row 2: not UTF-8 text \(byte 0xe9 .*save it|"
                                              r"latin1.jsonl: row 2: not UTF-8 text \(byte 0xe9 .*as UTF-8"):
        read_source(SourceSpec(source=str(path)), key="k", cache_dir=tmp_path / "cache")
