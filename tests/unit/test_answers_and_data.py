import json

import pytest

from alignflow.components.config import load_config
from alignflow.components.data.answers import extract_answer
from alignflow.components.data.arithmetic import generate_dataset, generate_split
from alignflow.components.data.io import DataValidationError, read_rows, write_rows
from alignflow.components.data.schemas import ProblemRow


def test_generator_is_deterministic_and_solutions_are_right():
    a = generate_split(50, 3, [1, 2, 3], 20, "eval")
    b = generate_split(50, 3, [1, 2, 3], 20, "eval")
    assert [r.model_dump() for r in a] == [r.model_dump() for r in b]
    other_seed = generate_split(50, 4, [1, 2, 3], 20, "eval")
    assert [r.question for r in other_seed] != [r.question for r in a]
    for row in a:
        # replay the worked solution's equations: each must hold and the last result is the answer
        value = None
        for line in row.solution.splitlines()[1:-1]:
            lhs, rhs = line.rstrip(".").split(" = ")
            left, op, right = lhs.split(" ")
            computed = {"+": int(left) + int(right), "-": int(left) - int(right),
                        "*": int(left) * int(right), "/": int(left) // int(right)}[op]
            assert op != "/" or int(left) % int(right) == 0
            assert computed == int(rhs) and computed >= 0
            value = computed
        assert value == row.answer
        assert extract_answer(row.solution) == row.answer
        assert len(row.solution.splitlines()) == row.difficulty + 2


def test_several_templates_and_difficulties():
    rows = generate_split(200, 0, [1, 2, 3], 20, "train")
    assert len({r.template for r in rows}) >= 4
    assert {r.difficulty for r in rows} == {1, 2, 3}


def test_eval_questions_never_appear_in_training_splits():
    splits = generate_dataset(0, 200, 200, 200, [1], 5)  # small space: collisions are likely
    held_out = {r.question for r in splits["eval"]}
    assert not held_out & {r.question for r in splits["sft"] + splits["train"]}
    assert len(splits["sft"]) == 200 and len(splits["train"]) == 200


def test_malformed_row_names_file_row_and_field(tmp_path):
    good = generate_split(3, 0, [1], 20, "eval")
    path = tmp_path / "problems.jsonl"
    lines = [json.dumps(r.model_dump()) for r in good]
    broken = dict(good[1].model_dump(), answer="seven")
    lines[1] = json.dumps(broken)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError, match=r"problems.jsonl: row 2: field 'answer'"):
        read_rows(path, ProblemRow)


def test_unknown_field_and_bad_json_are_named(tmp_path):
    path = tmp_path / "p.jsonl"
    row = generate_split(1, 0, [1], 20, "eval")[0].model_dump()
    path.write_text(json.dumps({**row, "anwser": 3}) + "\n")
    with pytest.raises(DataValidationError, match=r"row 1: field 'anwser': unknown field"):
        read_rows(path, ProblemRow)
    path.write_text(json.dumps(row) + "\n{not json\n")
    with pytest.raises(DataValidationError, match=r"row 2: not valid JSON"):
        read_rows(path, ProblemRow)


def test_bad_input_leaves_nothing_written(tmp_path):
    """A stage reading a malformed file fails before writing: no output, no temp file."""
    from alignflow.components.stages import score
    from alignflow.components.stages.results import Artifact

    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"prompt_id": "x", "prompt": "q", "source_prompt": "q", "sample_index": "NaNx", '
                       '"completion": "1", "n_tokens": 1}\n')
    out = tmp_path / "out"
    with pytest.raises(DataValidationError, match="samples.jsonl: row 1: field 'sample_index'"):
        score.score(load_config(None, []), Artifact.of(samples), out)
    assert not out.exists() or list(out.iterdir()) == []


def test_write_rows_is_atomic_on_failure(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_rows(path, generate_split(2, 0, [1], 20, "eval"))
    before = path.read_text()

    class Exploding(ProblemRow):
        def model_dump(self, *args, **kwargs):
            raise RuntimeError("boom")

    row = generate_split(1, 0, [1], 20, "eval")[0]
    with pytest.raises(RuntimeError):
        write_rows(path, [Exploding.model_validate(row.model_dump())])
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_atomic_outputs_get_ordinary_modes_not_temp_file_modes(tmp_path):
    """mkstemp makes 0600 files and mkdtemp 0700 dirs; an output must be readable as if open() had made it."""
    import os

    from alignflow.components.platform.atomic import atomic_directory, write_text_atomic

    umask = os.umask(0)
    os.umask(umask)
    written = write_text_atomic(tmp_path / "out.txt", "x")
    assert written.stat().st_mode & 0o777 == 0o666 & ~umask
    with atomic_directory(tmp_path / "ckpt") as staging:
        (staging / "w.bin").write_bytes(b"1")
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o777 & ~umask
