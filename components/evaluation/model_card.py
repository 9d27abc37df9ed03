"""A registry version's model card (``README.md`` in the version, and its registry description), generated
from what the pipeline logged: the version's tags, its run's params, per-round metrics and child runs,
the datasets every step logged (DVC md5 and repository path), and the gate report.

``collect_card_facts`` reads MLflow; ``render_model_card`` is pure. A section with nothing logged says
what is missing and why instead of leaving a template field empty.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from alignflow.components.evaluation.gates import GateResult, gate_table
from alignflow.components.platform.tracking import Tracker

DESCRIPTION_LIMIT = 5000  # characters: MLflow's model-version description column (PostgreSQL enforces it)
ROUND_METRICS = ("eval/accuracy", "eval/accuracy_d1", "eval/accuracy_d2", "eval/accuracy_d3", "eval/kl_to_reference",
                 "eval/mean_length", "eval/answer_rate")
JUDGE_METRICS = ("judge/exact_accuracy", "judge/mae", "judge/pairwise_agreement", "judge/malformed_rate")
RECIPE_PARAMS = ("model.source", "seed", "lora.enabled", "lora.r", "lora.alpha", "sft.enabled", "sft.epochs", "sft.lr",
                 "rounds.n_rounds", "rounds.kind", "sampling.k", "sampling.temperature", "sampling.prompts_per_round",
                 "pairs.strategy", "preference.loss_type", "preference.beta", "preference.lr", "preference.reference",
                 "data.sources.sft", "data.sources.prompts", "data.sources.preferences", "data.sources.eval",
                 "data.arithmetic.difficulties", "data.arithmetic.max_operand", "data.system_prompt",
                 "scoring.scorers", "promotion.metric", "eval.max_new_tokens", "reward.loss", "reward.labeller",
                 "judge.iterations", "judge.n_samples", "judge.max_new_tokens")


@dataclass(frozen=True)
class DataSource:
    """A dataset a step of the run logged (MLflow dataset input or output)."""

    name: str
    role: str  # the step's context: training, evaluation, pairs, generated, …
    md5: str
    dvc_path: str  # relative to the DVC repository ("" when the run did not record it)
    step: str  # the run that logged it


@dataclass(frozen=True)
class RoundFacts:
    index: int  # 0: the model the rounds started from
    kind: str
    n_pairs: float | None
    metrics: dict[str, float]


@dataclass
class CardFacts:
    """Everything a card says, gathered from the registry and the run (``collect_card_facts``)."""

    registered_model: str
    version: str
    family: str  # policy | judge | reward | base
    tags: dict[str, str]
    run_id: str | None = None
    run_name: str = ""
    experiment: str = ""
    params: dict[str, str] = field(default_factory=dict)
    run_tags: dict[str, str] = field(default_factory=dict)
    rounds: list[RoundFacts] = field(default_factory=list)
    datasets: list[DataSource] = field(default_factory=list)
    gate: dict[str, Any] | None = None


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def family_of(tags: dict[str, str]) -> str:
    """policy, judge, reward or base: the ``family`` tag, else a ``role: judge`` tag, else a policy."""
    if tags.get("family"):
        return tags["family"]
    return "judge" if tags.get("role") == "judge" else "policy"


def _datasets(runs: list[Any]) -> list[DataSource]:
    seen: dict[tuple[str, str], DataSource] = {}
    for run in runs:
        for entry in (run.inputs.dataset_inputs if run.inputs else []):
            tags = {t.key: t.value for t in entry.tags}
            md5 = tags.get("dvc_md5") or entry.dataset.digest
            key = (entry.dataset.name, md5)
            if key not in seen:
                seen[key] = DataSource(entry.dataset.name, tags.get("mlflow.data.context", ""), md5,
                                       tags.get("dvc_path", ""), str(run.info.run_name))
    return sorted(seen.values(), key=lambda d: (d.step, d.name))


def _round_metrics(family: str, tags: dict[str, str]) -> tuple[str, ...]:
    """The per-round metrics a card shows: the family's, and the version's own promotion metric."""
    keys = JUDGE_METRICS if family == "judge" else ROUND_METRICS
    own = tags.get("eval_metric_name", "")
    return keys if not own or own in keys else (own, *keys)


def _rounds(tracker: Tracker, parent: Any, children: list[Any], family: str,
            tags: dict[str, str]) -> list[RoundFacts]:
    """Per step of the parent run's metric history (step 0: the start), with each round run's kind and pairs."""
    keys = (*_round_metrics(family, tags), "eval/n")  # n: for the standard error, not a column
    by_step: dict[int, dict[str, float]] = {}
    for key in keys:
        if key in parent.data.metrics:
            for m in tracker.metric_history(parent.info.run_id, key):
                by_step.setdefault(int(m.step), {})[key] = float(m.value)
    kinds: dict[int, tuple[str, float | None]] = {}
    for run in children:
        tags, metrics = run.data.tags, run.data.metrics
        if tags.get("alignflow.kind") == "round":
            kinds[int(tags["round"])] = (tags.get("round_kind", "round"), _float(metrics.get("round/n_pairs")))
        elif tags.get("alignflow.kind") == "judge_iteration" and int(tags.get("iteration", 0)) > 0:
            kinds[int(tags["iteration"])] = ("self-rationalization DPO",
                                             _float(metrics.get("judge_pairs/n_pairs")))
    start = "seed judge (SFT)" if family == "judge" else ("after SFT" if parent.data.params.get("sft.enabled") == "True"
                                                         else "base")
    return [RoundFacts(step, start if step == 0 else kinds.get(step, ("round", None))[0],
                       None if step == 0 else kinds.get(step, ("", None))[1], metrics)
            for step, metrics in sorted(by_step.items())]


def _inherited_params(tracker: Tracker, run: Any) -> dict[str, str]:
    """The run's params over its ancestors' (a nested run, e.g. the reward-model step's, logs only its
    own; the pipeline run above it holds the data sources and the rest of the config)."""
    chain, seen = [run], {run.info.run_id}
    while (parent_id := chain[-1].data.tags.get("mlflow.parentRunId")) and parent_id not in seen and len(chain) < 8:
        seen.add(parent_id)
        chain.append(tracker.get_run(parent_id))
    params: dict[str, str] = {}
    for ancestor in reversed(chain):
        params.update(dict(ancestor.data.params))
    return params


def collect_card_facts(tracker: Tracker, name: str, version: Any, gate: dict[str, Any] | None = None) -> CardFacts:
    """A version's facts: its tags, and — when it names the run that produced it — that run's params,
    tags, per-round metrics, round kinds and pair counts, and every dataset its steps logged."""
    tags = dict(version.tags or {})
    facts = CardFacts(registered_model=name, version=str(version.version), family=family_of(tags), tags=tags,
                      gate=gate)
    run_id = tags.get("pipeline_run_id") or version.run_id
    if not run_id:
        return facts
    parent = tracker.get_run(run_id)
    facts.run_id, facts.run_name = run_id, str(parent.info.run_name)
    facts.params, facts.run_tags = _inherited_params(tracker, parent), dict(parent.data.tags)
    experiment = parent.info.experiment_id
    facts.experiment = str(experiment)
    children = tracker.search_runs(f"tags.mlflow.parentRunId = '{run_id}'", max_results=1000,
                                   experiment_ids=[experiment])
    if facts.family == "reward":  # its step's params (reward.*) are logged on the training run under it
        for child in children:
            facts.params.update({k: v for k, v in child.data.params.items() if k not in facts.params})
    grandchildren = [g for c in children if c.data.tags.get("alignflow.kind") in ("round", "judge_iteration")
                     for g in tracker.search_runs(f"tags.mlflow.parentRunId = '{c.info.run_id}'", max_results=1000,
                                                  experiment_ids=[experiment])]
    facts.rounds = [] if facts.family == "reward" else _rounds(tracker, parent, children, facts.family, tags)
    facts.datasets = _datasets([*children, *grandchildren])
    return facts


def _mb(value: Any) -> str:
    number = _float(value)
    return "size not recorded" if number is None else f"{number / 1e6:.1f} MB"


def _stored_as(t: dict[str, str]) -> str:
    dtype = t.get("model_dtype", "float32")
    fmt = t.get("model_format", "")
    if fmt == "adapter":
        return (f"a LoRA adapter ({_mb(t.get('size_bytes'))}) on the base below, folded into it in float32 at load "
                f"time (needs `peft`)")
    if fmt == "merged":
        return f"full weights, the LoRA adapter merged in, {dtype} ({_mb(t.get('size_bytes'))})"
    if fmt == "full":
        return f"full weights as trained, {dtype} ({_mb(t.get('size_bytes'))})"
    return "run artifacts registered before alignflow logged models (not an MLflow model)"


def _summary(f: CardFacts) -> str:
    p = f.params
    if f.family == "base":
        return (f"The base model every alignflow checkpoint of this content builds on, registered once by the "
                f"sha256 of its weights so that versions name it by `models:/` URI instead of a local path. "
                f"Source: {f.tags.get('source', 'not recorded')}.")
    rounds = [r for r in f.rounds if r.index > 0]
    kinds = sorted({r.kind for r in rounds})
    if f.family == "reward":
        return (f"A reward model trained by alignflow's reward_model step ({p.get('reward.loss', 'bt')} loss) from "
                f"the SFT policy's backbone, on preference pairs over {_task(f)}: it reads a prompt and a response "
                f"and returns a score, higher = preferred. Its pairs: {f.tags.get('pairs_source', 'not recorded')}.")
    if f.family == "judge":
        return (f"An LLM judge trained by alignflow's self-rationalization loop: a seed judge fine-tuned on "
                f"labelled judgments, then {len(rounds)} iteration(s) of DPO on its own curated judgments. It reads "
                f"a question, a response and a rubric and answers with a rationale and `Score: N` (1–5).")
    named = ", ".join(k for k in kinds if k != "round")
    loss, beta = p.get("preference.loss_type"), p.get("preference.beta")
    how = f" with the {loss} DPO loss (β = {beta})" if loss else ""
    recipe = (f"{len(rounds)} round(s) of preference training" + (f" ({named})" if named else "") + how
              if rounds else "no preference rounds")
    sft = "supervised fine-tuning, then " if p.get("sft.enabled") == "True" else ""
    return f"A policy aligned by alignflow: {sft}{recipe}, on {_task(f)}."


def _sources(p: dict[str, str], role: str) -> list[str]:
    """The ``source`` of every data source of ``role`` in the logged params (a list's repr)."""
    return re.findall(r"'source': '([^']+)'", p.get(f"data.sources.{role}", ""))


def _task(f: CardFacts) -> str:
    """What the model was trained on, in words, from the logged data sources."""
    p = f.params
    names = sorted({s for role in ("prompts", "sft", "preferences", "eval") for s in _sources(p, role)})
    if names == ["builtin:arithmetic"] or (not names and "data.arithmetic.max_operand" in p):
        return (f"alignflow's synthetic arithmetic word problems ({p.get('data.arithmetic.difficulties', '')} "
                f"operations, operands up to {p.get('data.arithmetic.max_operand', '')})")
    if names == ["builtin:constraints"]:
        return "alignflow's synthetic writing instructions with verifiable constraints (builtin:constraints)"
    if not names:
        return "data the producing run did not record"
    return "the data sources " + ", ".join(f"`{n}`" for n in names)


def _facts_table(f: CardFacts) -> str:
    t = f.tags
    rows = [("registered model", f"`models:/{f.registered_model}/{f.version}`"),
            ("alignflow model id", f"`{t.get('model_id', 'not recorded')}`"),
            ("stored as", _stored_as(t))]
    if t.get("weights_sha256"):
        rows.append(("weights sha256", f"`{t['weights_sha256']}`"))
    if f.family != "base":
        base = t.get("base_model_uri")
        rows.append(("base model", (f"`{base}` (`{t.get('base_model', '')}`, weights sha256 "
                                    f"`{t.get('base_weights_sha256', '')}`)") if base
                     else "none recorded: the checkpoint names no base, these weights are where it starts"))
    if f.run_id:
        rows.append(("produced by", f"MLflow run `{f.run_id}` ({f.run_name}, experiment id {f.experiment})"))
    for key, label in (("git_commit", "git commit"), ("config_hash", "config hash"), ("code_version", "code version")):
        value = t.get(key) or f.run_tags.get(key)
        if value:
            rows.append((label, f"`{value}`"))
    return "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def _recipe(f: CardFacts) -> str:
    judge_shaped = f.family == "judge" or f.params.get("rounds.kind") == "synthesized"
    chosen = [(k, f.params[k]) for k in RECIPE_PARAMS if k in f.params and (judge_shaped or not k.startswith("judge."))]
    if not chosen:
        return "The producing run logged no configuration parameters.\n"
    return ("The run's configuration (every key is a param of the run):\n\n| key | value |\n|---|---|\n"
            + "".join(f"| `{k}` | `{v}` |\n" for k, v in chosen))


def _data(f: CardFacts) -> str:
    if not f.datasets:
        return "The producing run logged no datasets.\n"
    rows = "".join(f"| {d.name} | {d.role} | `{d.md5}` | `{d.dvc_path}` | {d.step} |\n" if d.dvc_path else
                   f"| {d.name} | {d.role} | `{d.md5}` | not recorded | {d.step} |\n" for d in f.datasets)
    return ("Every file is versioned with DVC (`dvc pull` restores it by its md5):\n\n"
            "| dataset | role | md5 (DVC) | path in the repository | logged by |\n|---|---|---|---|---|\n" + rows)


def _rounds_table(f: CardFacts) -> str:
    if not f.rounds:
        return "The producing run logged no per-round evaluation.\n"
    keys = [k for k in _round_metrics(f.family, f.tags) if any(k in r.metrics for r in f.rounds)]
    header = "| round | kind | pairs | " + " | ".join(f"`{k}`" for k in keys) + " |\n"
    lines = [header, "|---|---|---|" + "---|" * len(keys) + "\n"]
    for r in f.rounds:
        cells = [f"{r.metrics[k]:.3f}" if k in r.metrics else "–" for k in keys]
        pairs = "–" if r.n_pairs is None else f"{r.n_pairs:.0f}"
        lines.append(f"| {r.index} | {r.kind} | {pairs} | " + " | ".join(cells) + " |\n")
    return "".join(lines)


def _evaluation(f: CardFacts) -> str:
    t = f.tags
    accuracy, baseline = _float(t.get("eval_accuracy")), _float(t.get("baseline_accuracy"))
    name = "eval/accuracy"
    if accuracy is None:  # a task scored by its own metric (promotion.metric)
        name = t.get("eval_metric_name", "")
        accuracy, baseline = _float(t.get("eval_metric")), _float(t.get("baseline_metric"))
    if accuracy is None:
        return "No held-out evaluation is recorded on this version.\n"
    metric = {"judge": "exact-score accuracy on held-out labelled judgments",
              "reward": "pairwise accuracy on held-out preference pairs"}.get(
        f.family, "held-out accuracy" if name == "eval/accuracy" else f"held-out `{name}`")
    counted = [r.metrics["eval/n"] for r in f.rounds if "eval/n" in r.metrics]  # the eval set's size
    n = counted[-1] if counted and f.family == "policy" and name == "eval/accuracy" else None
    error = f" (standard error ±{math.sqrt(accuracy * (1 - accuracy) / n):.3f} at n = {n:.0f})" if n else ""
    start = f", from {baseline:.3f} before the rounds" if baseline is not None else ""
    decoding = "" if f.family == "reward" else ", greedy decoding"
    return (f"{metric}: **{accuracy:.3f}**{error}{start}; eval set DVC md5 `{t.get('eval_dataset', 'not recorded')}`"
            f"{decoding}.\n")


def _gate(f: CardFacts) -> str:
    g = f.gate
    if g is None:
        return ("Not gated yet: the version was registered as `candidate`. This section is replaced by the gate's "
                "report when the pipeline's gate or `alignflow promote` decides.\n")
    gates = [GateResult(**{k: r.get(k) for k in ("gate", "status", "value", "limit", "detail")}) for r in g["gates"]]
    moved = g.get("aliases_set")
    verdict = "PASSED" if g.get("passed") else "BLOCKED"
    where = f" Aliases set: {', '.join(moved)}." if moved else ""
    return f"**{verdict}** — {g.get('reason', '')}.{where}\n\n{gate_table(gates)}"


def _usage(f: CardFacts) -> str:
    uri = f"models:/{f.registered_model}/{f.version}"
    if f.tags.get("model_format", "") not in ("merged", "full", "adapter"):
        return "This version predates alignflow's MLflow models: load its files with alignflow.\n"
    if f.family == "reward":
        rows = '[{"prompt": "<the rendered prompt>", "response": "<a response>"}]'
        return (f"```python\nimport mlflow  # MLFLOW_TRACKING_URI: the registry\n"
                f"model = mlflow.pyfunc.load_model(\"{uri}\")\n"
                f"model.predict({rows})  # one score per row, higher = preferred\n```\n\n"
                f"```bash\nmlflow models serve -m {uri} --env-manager local -p 5001\n"
                f"curl -s localhost:5001/invocations -H 'Content-Type: application/json' "
                f"-d '{{\"dataframe_records\": {rows}}}'\n```\n")
    request = '{"messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 64, "temperature": 0.0}'
    return (f"```python\nimport mlflow  # MLFLOW_TRACKING_URI: the registry\n"
            f"model = mlflow.pyfunc.load_model(\"{uri}\")\n"
            f"model.predict({{\"messages\": [{{\"role\": \"user\", \"content\": \"What is 2 + 3?\"}}]}},\n"
            f"              params={{\"max_tokens\": 64, \"temperature\": 0.0}})\n```\n\n"
            f"```bash\nmlflow models serve -m {uri} --env-manager local -p 5001\n"
            f"curl -s localhost:5001/invocations -H 'Content-Type: application/json' -d '{request}'\n"
            f"# a plain Hugging Face directory:\n"
            f"alignflow export --model {f.registered_model} --version {f.version} "
            f"--out ./{f.registered_model}-v{f.version}\n```\n")


def _intended_use(f: CardFacts) -> str:
    task = _task(f)
    if f.family == "base":
        return ("Starting point for alignflow's training; lineage anchor of every version built on it. Not aligned "
                "by alignflow.\n")
    if f.family == "judge":
        return (f"Rating responses to {task} on a 1–5 rubric with a rationale: the judge of alignflow's synthesized "
                f"rounds and of the promotion gate's win rate. Research and demonstration only.\n")
    if f.family == "reward":
        return (f"Scoring responses to prompts like those of {task}: the reward signal of alignflow's "
                f"reward-model-scored rounds. Research and demonstration only.\n")
    return (f"Responding to prompts like those of {task} — research and demonstration of iterative preference "
            f"alignment. Not for general-purpose chat, advice, or any decision that matters.\n")


def _limits(f: CardFacts) -> str:
    t, p = f.tags, f.params
    out = []
    accuracy = _float(t.get("eval_accuracy"))
    if accuracy is not None and f.family in ("policy", "judge"):
        wrong = "most of its answers are wrong" if accuracy < 0.5 else f"{1 - accuracy:.0%} of its answers are wrong"
        out.append(f"Held-out {'exact-score accuracy' if f.family == 'judge' else 'accuracy'} is {accuracy:.3f}: "
                   f"{wrong}.")
    if f.family == "base":
        out.append("Not trained or evaluated by alignflow: what it can do is its source's to say (above).")
    else:
        out.append(f"Trained and evaluated only on {_task(f)}: nothing is measured on any other input.")
    if f.family == "policy":
        cap = f" and at most {p['eval.max_new_tokens']} new tokens" if p.get("eval.max_new_tokens") else ""
        out.append(f"Evaluated with greedy decoding{cap}; sampled answers (temperature > 0) were not evaluated.")
        kl, length = _float(t.get("eval_kl")), _float(t.get("eval_mean_length"))
        if kl is not None:
            out.append(f"KL to its reference model (Monte-Carlo estimate, few samples): {kl:.3f}.")
        if length is not None:
            out.append(f"Mean answer length {length:.1f} tokens.")
    if f.family == "judge":
        malformed = next((r.metrics.get("judge/malformed_rate") for r in reversed(f.rounds)
                          if "judge/malformed_rate" in r.metrics), None)
        if malformed is not None:
            out.append(f"{malformed:.1%} of its held-out judgments had no parsable score.")
        out.append("Position bias is probed per synthesized round (`quality/judge_flip_rate`), not corrected here.")
    source = (p.get("model.source") or t.get("base_model", "") or t.get("source", "")).lower()
    built = "It is" if f.family == "base" else "Built on"
    if "tiny" in source:
        out.append(f"{built} a tiny randomly initialised test model: its outputs are not meaningful text.")
    elif "smollm2" in source:
        out.append(f"{built} SmolLM2-135M-Instruct de-quantized from a 4-bit GGUF: a very small model.")
    return "".join(f"- {line}\n" for line in out)


def render_model_card(f: CardFacts) -> str:
    """The card as markdown with Hugging Face front matter."""
    title = {"base": "base model", "judge": "judge", "policy": "policy", "reward": "reward model"}.get(f.family,
                                                                                                     f.family)
    pipeline_tag = "text-classification" if f.family == "reward" else "text-generation"
    return (f"---\nlibrary_name: transformers\npipeline_tag: {pipeline_tag}\ntags:\n- alignflow\n- {f.family}\n---\n\n"
            f"# {f.registered_model} v{f.version} ({title})\n\n{_summary(f)}\n\n{_facts_table(f)}\n"
            + ("" if f.family == "base" else
               f"## Training\n\n{_recipe(f)}\n## Data\n\n{_data(f)}\n## Rounds\n\n{_rounds_table(f)}\n"
               f"## Evaluation\n\n{_evaluation(f)}\n## Gate\n\n{_gate(f)}\n")
            + f"## How to use\n\n{_usage(f)}\n## Intended use\n\n{_intended_use(f)}\n## Known limits\n\n{_limits(f)}")


def _sections(card: str) -> list[str]:
    head, *rest = card.split("\n## ")
    return [head, *(f"## {section}" for section in rest)]


# what a registry description leaves out first when the card does not fit, each replaced by a pointer
_DROPPABLE = ("## How to use", "## Training", "## Data")


def description_of(card: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """The card as a registry description: whole when it fits MLflow's column; else without its usage
    snippets, then its recipe, then its data table (each replaced by a pointer to README.md in the version),
    and cut only as a last resort."""
    sections = _sections(card)
    for title in _DROPPABLE:
        if len("\n".join(sections)) <= limit:
            break
        sections = [f"{title}\n\nIn README.md of the version (left out here: the registry's description is "
                    f"limited to {limit} characters).\n" if s.startswith(title + "\n") else s for s in sections]
    text = "\n".join(sections)
    if len(text) <= limit:
        return text
    note = "\n\n(cut to fit the registry's description: the full card is README.md in the version)\n"
    return text[: limit - len(note)] + note
