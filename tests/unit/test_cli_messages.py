"""What the `alignflow` command prints for bad input reaches the user whole: error messages hold
lists in square brackets (columns, splits), which the console's markup would otherwise eat."""

import json
import subprocess
import sys


def test_data_check_prints_the_columns_a_source_has(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"query": f"q{i}", "gold": str(i)}) + "\n" for i in range(3)))
    config = tmp_path / "params.yaml"
    config.write_text(f"model: {{source: tiny}}\nstate_dir: {tmp_path / 'state'}\ndata:\n  sources:\n"
                      f"    prompts: [{{source: '{rows}', columns: {{question: prompt}}}}]\n")
    done = subprocess.run([sys.executable, "-m", "alignflow.cli", "data", "check", "-c", str(config)],
                          capture_output=True, text=True, timeout=300, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin",
                                                                          "HOME": str(tmp_path)})
    assert done.returncode == 1, done.stdout + done.stderr
    out = " ".join((done.stdout + done.stderr).split())
    assert "missing column (columns: [query, gold])" in out, out


def test_a_python_scorer_that_does_not_resolve_fails_at_load_naming_its_key(tmp_path):
    (tmp_path / "rewards.py").write_text("def exact(prompts, completions, **columns):\n"
                                         "    return [1.0] * len(prompts)\n")
    config = tmp_path / "params.yaml"
    config.write_text(f"model: {{source: tiny}}\nstate_dir: {tmp_path / 'state'}\n"
                      f"scoring:\n  scorers: [{{type: python, function: 'rewards.py:exakt', pass_threshold: 1.0}}]\n")
    done = subprocess.run([sys.executable, "-m", "alignflow.cli", "data", "check", "-c", str(config)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin",
                                                                          "HOME": str(tmp_path)})
    assert done.returncode == 2, done.stdout + done.stderr
    out = " ".join((done.stdout + done.stderr).split())
    assert ("config error: scoring.scorers[0].function: 'rewards.py:exakt': rewards.py has no callable 'exakt'"
            in out), out


def test_torch_threads_reaches_every_thread_through_the_environment(tmp_path, monkeypatch):
    import os

    from alignflow.cli import configure_environment
    from alignflow.components.config import load_config

    # configure_environment writes the process environment: give it a copy, so nothing leaks into other tests
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()
                                        if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    env = configure_environment(load_config(None, [f"state_dir={tmp_path}", "model.torch_threads=1"]))
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1" == os.environ["OMP_NUM_THREADS"]
    os.environ.pop("OMP_NUM_THREADS")
    assert "OMP_NUM_THREADS" not in configure_environment(load_config(None, [f"state_dir={tmp_path}"]))


def test_data_check_catches_eval_prompts_that_are_also_training_prompts(tmp_path):
    rows = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(4)]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[2:]))
    config = tmp_path / "params.yaml"
    config.write_text(f"model: {{source: tiny}}\nstate_dir: {tmp_path / 'state'}\ndata:\n  sources:\n"
                      f"    prompts: [{{source: '{tmp_path / 'prompts.jsonl'}'}}]\n"
                      f"    eval: [{{source: '{tmp_path / 'eval.jsonl'}'}}]\n")
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "alignflow.cli", "data", "check", "-c", str(config)],
                          capture_output=True, text=True, timeout=300, env=env)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1 and "2 eval prompt(s) also occur in a training role" in out, out
    lenient = subprocess.run([sys.executable, "-m", "alignflow.cli", "data", "check", "-c", str(config),
                              "-s", "data.fail_on_contamination=false"], capture_output=True, text=True, timeout=300,
                             env=env)
    out = " ".join((lenient.stdout + lenient.stderr).split())
    assert lenient.returncode == 0 and "fail_on_contamination is false: a run goes on" in out, out


def test_a_run_that_fails_on_bad_data_ends_with_the_message_not_a_traceback(tmp_path):
    rows = [{"prompt": f"Write note {i}.", "constraints": [{"kind": "lowercase"}]} for i in range(6)]
    rows[2]["constraints"] = [{"kind": "include_words", "words": "soil"}]  # a string where a list belongs
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "params.yaml"
    config.write_text(f"model: {{source: tiny}}\nstate_dir: {tmp_path / 'state'}\nworkspace: {tmp_path / 'ws'}\n"
                      f"versioning: {{enabled: false}}\n"
                      f"data:\n  sources:\n    prompts: [{{source: '{tmp_path / 'prompts.jsonl'}'}}]\n"
                      f"    sft: [{{source: 'builtin:constraints'}}]\n    eval: [{{source: 'builtin:constraints'}}]\n"
                      f"scoring:\n  scorers: [{{type: constraints}}]\n")
    done = subprocess.run([sys.executable, "-m", "alignflow.cli", "run", "-c", str(config)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "ALIGNFLOW_NO_PROGRESS": "1",
                               "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    tail = " ".join(done.stdout.split()[-60:])  # the command's own last lines (Prefect logs to stderr)
    assert ("alignflow run failed: " in tail and "prompts.jsonl: row 3: field 'constraints': "
            "IncludeWords.words must be a list of words, got the string 'soil'" in tail), tail
    assert "Traceback" not in done.stdout and "Error" not in done.stdout.split("failed:")[0], done.stdout


def test_compare_before_any_run_says_so_in_one_line(tmp_path):
    config = tmp_path / "params.yaml"
    config.write_text(f"model: {{source: tiny}}\nstate_dir: {tmp_path / 'state'}\n"
                      f"tracking: {{experiment: nothing-yet}}\n")
    done = subprocess.run([sys.executable, "-m", "alignflow.cli", "compare", "-c", str(config)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 1, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert "no finished pipeline run in experiment" in out and "'nothing-yet': run `alignflow run`" in out, out
    assert "Traceback" not in done.stdout + done.stderr


def test_data_check_of_a_file_parses_its_constraints_column(tmp_path):
    rows = [{"prompt": f"Write note {i}.", "constraints": [{"kind": "lowercase"}]} for i in range(3)]
    rows[1]["constraints"] = [{"kind": ["x"]}]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "params.yaml"
    config.write_text(f"model: {{source: tiny}}\nstate_dir: {tmp_path / 'state'}\n"
                      f"scoring:\n  scorers: [{{type: constraints}}]\n")
    done = subprocess.run([sys.executable, "-m", "alignflow.cli", "data", "check", "-c", str(config), "--role",
                           "prompts", str(tmp_path / "prompts.jsonl")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 1, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert "prompts.jsonl: row 2: field 'constraints': unknown constraint kind ['x']" in out, out
