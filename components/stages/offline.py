"""Stage ``offline``: a ``preferences`` source as a pair file the preference trainer reads — the
offline DPO path (train on existing pairs, before any on-policy round, or as the whole pipeline
with ``rounds.n_rounds: 0``).

Each row's prompt is rendered as the policy sees it (``data.prompt_template``, the chat template);
chosen and rejected are the assistant texts (a conversational response's final turn content, a
multi-turn one as the template renders it), EOS left to the trainer. A ``rationale`` column makes
the row rationale-enriched (ALGORITHMS.md §4); a ``label_smoothing`` column sets its own ε.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

from alignflow.components.config import PipelineConfig
from alignflow.components.data.formats import Example, Text, render_response
from alignflow.components.data.io import write_rows
from alignflow.components.data.prompts import rationale_prompt
from alignflow.components.data.schemas import PairRow
from alignflow.components.modeling.checkpoints import is_adapter, load_tokenizer
from alignflow.components.stages.common import base_path_of, elapsed, read_examples, render
from alignflow.components.stages.results import Artifact, Checkpoint, PairsResult


def _text(response: Text | None, tokenizer: object, example: Example, field: str) -> str:
    if response is None:
        raise ValueError(f"{example.origin}: field '{field}': a preference row needs it")
    eos = cast(str, getattr(tokenizer, "eos_token", "") or "")
    text = render_response(response, tokenizer, example.prompt if isinstance(example.prompt, list) else None)
    return text[: -len(eos)] if eos and text.endswith(eos) else text


def preference_pairs(config: PipelineConfig, policy: Checkpoint, preferences: Artifact, out_dir: Path) -> PairsResult:
    """``pairs.jsonl`` from the preferences role, lineage naming the source rows.

    Raises:
        ValueError: a row lacks chosen or rejected, or a ``label_smoothing`` outside [0, 0.5) (names the row).
    """
    start = time.perf_counter()
    rows = read_examples(preferences)
    tokenizer = load_tokenizer(policy.dir if not is_adapter(policy.dir) else Path(base_path_of(policy.dir)))
    pairs = []
    for example in rows:
        prompt = render(config, tokenizer, example)
        chosen = _text(example.chosen, tokenizer, example, "chosen")
        rejected = _text(example.rejected, tokenizer, example, "rejected")
        rationale = example.columns.get("rationale")
        smoothing = example.columns.get("label_smoothing")
        if smoothing is not None and not (isinstance(smoothing, (int, float)) and 0 <= smoothing < 0.5):
            raise ValueError(f"{example.origin}: field 'label_smoothing': {smoothing!r} is outside [0, 0.5)")
        pairs.append(PairRow(
            problem_id=example.id, prompt=prompt, chosen=chosen, rejected=rejected,
            score_chosen=float(example.columns.get("score_chosen", 1.0)),
            score_rejected=float(example.columns.get("score_rejected", 0.0)),
            label_smoothing=smoothing, rationale=str(rationale) if rationale else None,
            rationale_prompt=rationale_prompt(tokenizer, prompt, chosen, rejected) if rationale else None,
            lineage={"source": "preferences", "origin": example.origin, "preferences_md5": preferences.md5}))
    path = write_rows(Path(out_dir) / "pairs.jsonl", pairs)
    return PairsResult(pairs=Artifact.of(path), n_pairs=len(pairs), seconds=elapsed(start))
