"""Stage ``mcts``: one step-level MCTS tree per round prompt with the current policy (ALGORITHMS.md
§2), written as JSON lines, the largest as an HTML page, and its step pairs as a pair file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

from alignflow.components.collection.mcts.pairs import step_pair_rows
from alignflow.components.collection.mcts.policy import StepPolicy
from alignflow.components.collection.mcts.render import render_tree_html
from alignflow.components.collection.mcts.search import SearchProblem, search
from alignflow.components.collection.mcts.tree import number_nodes, to_dict, walk
from alignflow.components.config import PipelineConfig
from alignflow.components.data.formats import Example
from alignflow.components.data.io import write_rows
from alignflow.components.modeling.checkpoints import load_checkpoint
from alignflow.components.platform.atomic import write_bytes_atomic, write_jsonl_atomic
from alignflow.components.platform.progress import progress_bar
from alignflow.components.scoring.base import gold_value
from alignflow.components.stages.common import elapsed, read_examples, render, round_prompts
from alignflow.components.stages.results import Artifact, Checkpoint, MCTSResult


def search_problem(config: PipelineConfig, row: Example, prompt: str) -> SearchProblem:
    """A prompts row as an MCTS problem: the terminal reward needs its gold answer (the primary
    scorer's gold column, else ``ground_truth`` / ``answer``); its completion, when it has one, is the
    reference solution the self-evaluation shows.

    Raises:
        ValueError: the row has no numeric gold answer (names the row).
    """
    gold = gold_value(config.scoring.scorers[0], row.columns)
    if isinstance(gold, bool) or not isinstance(gold, (int, float)):
        raise ValueError(f"{row.origin}: rounds.kind=mcts needs a numeric gold answer per prompt (a ground_truth or "
                         f"answer column), got {gold!r}")
    question = str(row.columns.get("question") or (row.prompt if isinstance(row.prompt, str) else prompt))
    reference = row.completion if isinstance(row.completion, str) else None
    return SearchProblem(row.id, question, gold, prompt, reference)


def mcts_collect(config: PipelineConfig, policy: Checkpoint, train: Artifact, round_index: int,
                 out_dir: Path) -> MCTSResult:
    """``trees.jsonl``, ``tree-r<N>.html`` (the largest tree) and ``pairs.jsonl`` (step pairs with
    their visit-count ε) for the round's prompts."""
    start = time.perf_counter()
    m = config.mcts
    rows = round_prompts(read_examples(train), round_index, config.sampling.prompts_per_round)
    loaded = load_checkpoint(policy.dir, merge=True)
    tok = loaded.tokenizer
    items = [search_problem(config, r, render(config, tok, r)) for r in rows]
    seed = config.seed * 1000 + round_index
    step_policy = StepPolicy(loaded.model, tok, m.max_new_tokens_per_step, m.temperature, m.reuse_prefix_cache,
                             m.step_separator, backend=config.sampling.backend, compile=config.sampling.compile)
    per_tree = m.first_root_iterations_factor * m.n_iters + (m.depth_limit - 1) * m.n_iters  # at most
    with progress_bar(f"round {round_index}: MCTS over {len(items)} prompts", per_tree * len(items)) as advance:
        results = search(step_policy, items, m, seed, on_iteration=advance)
    search_seconds = elapsed(start)
    out_dir = Path(out_dir)
    tree_lines = []
    for r in results:
        number_nodes(r.root)
        tree_lines.append({"problem_id": r.problem.problem_id, "path": [n.node_id for n in r.path],
                           "final_correct": r.final_correct, "kept": r.kept, "tree": to_dict(r.root)})
    trees_path = write_jsonl_atomic(out_dir / "trees.jsonl", tree_lines)
    largest = max(results, key=lambda r: len(walk(r.root)))
    html_path = out_dir / f"tree-r{round_index}.html"
    write_bytes_atomic(html_path, render_tree_html(largest.root, largest.path,
                                                   f"round {round_index}, problem {largest.problem.problem_id}: "
                                                   f"{largest.problem.question}").encode())
    lineage = {"policy_model_id": loaded.model_id, "round": round_index, "search_seed": seed, "source": "mcts",
               "mcts": m.model_dump(mode="json")}
    pairs = step_pair_rows(results, cast(str, tok.eos_token), m.conservative, lineage, m.step_separator)
    pairs_path = write_rows(out_dir / "pairs.jsonl", pairs)
    n_nodes = sum(len(walk(r.root)) - 1 for r in results)
    return MCTSResult(pairs=Artifact.of(pairs_path), n_pairs=len(pairs), trees=Artifact.of(trees_path),
                      tree_html=str(html_path), n_trees=len(results), trees_kept=sum(r.kept for r in results),
                      n_nodes=n_nodes, final_accuracy=sum(r.final_correct for r in results) / max(1, len(results)),
                      nodes_per_second=n_nodes / max(search_seconds, 1e-9), search_seconds=search_seconds,
                      tokens_encoded=step_policy.expanded_tokens, policy_model_id=loaded.model_id, seed=seed,
                      seconds=elapsed(start))
