"""The preference trainer: one loop for pairwise, joint (DOVE), rationale and list (TPO) rows.

- Pairwise rows: the DPO-family loss of ``config.loss_type`` on the (f-divergence) margin; a
  row's own ``label_smoothing`` (ensemble smoothing, step-level visit ε) overrides the config's
  and turns plain sigmoid into cDPO for that row (cDPO with ε = 0 is DPO).
- Joint rows (``prompt_rejected`` set): log-probs cover prompt *and* response (§6); with equal
  prompts this is DPO, since the prompt terms cancel in the margin.
- Rationale rows (``rationale`` set): plus the rationale term on log π_θ(r | x_rat) (§4).
- List rows (``ListExample``): TPO's λ-weighted pairwise ranking of step-averaged log-ratios (§5).

Reference log-probs are computed once, before training, by ``reference_logprobs`` and passed
in; the policy scores chosen and rejected in one concatenated forward per batch.

Rows longer than ``max_length`` (``fit_examples``, the one rule both passes apply): a response is
cut from the right to the room its whole prompt leaves; a row whose prompt leaves no room is
dropped — a pair when either side (or its rationale row) is, a list row when any response is. The
reference pass gives dropped rows NaN log-probs, training skips them, and both report the counts.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeGuard, cast, overload

import torch

from alignflow.components.config import PreferenceConfig
from alignflow.components.data.prompts import rationale_prompt
from alignflow.components.modeling.checkpoints import LoadedModel
from alignflow.components.modeling.logprobs import (
    Batch,
    FitStats,
    TokenRow,
    collate,
    encode_pairs,
    encode_stepped,
    fit_rows,
    fit_stepped,
    response_token_logprobs,
    sequence_logprobs,
)
from alignflow.components.objectives.preference import (
    f_divergence_margin,
    loss_from_margin,
    preference_metric_tensors,
    rationale_term,
)
from alignflow.components.objectives.ranking import asr_weights, response_reward, step_means, tpo_loss
from alignflow.components.platform.distributed import current_world, loss_weight, shard
from alignflow.components.trainers.common import (
    DeferredMetrics,
    StepCallback,
    disable_dropout,
    model_device,
    n_steps,
    seeded_batches,
)
from alignflow.components.trainers.resume import TrainingCheckpointer
from alignflow.components.trainers.stepping import PlainStepper, make_stepper

logger = logging.getLogger("alignflow.trainers.preference")


@dataclass
class PreferenceExample:
    prompt: str
    chosen: str
    rejected: str
    prompt_rejected: str | None = None  # DOVE: the rejected response's own instruction
    rationale: str | None = None  # why chosen is better: the §4 target
    rationale_prompt: str | None = None  # x_rat; built from (prompt, chosen, rejected) when None
    label_smoothing: float | None = None  # per-pair ε, overriding the config's

    @property
    def joint(self) -> bool:
        return self.prompt_rejected is not None


@dataclass
class ListExample:
    prompt: str
    responses: list[list[str]]  # each response as its reasoning steps
    scores: list[float] = field(default_factory=list)  # higher is better

    def __post_init__(self) -> None:
        if len(self.responses) < 2 or len(self.responses) != len(self.scores):
            raise ValueError(f"a list row needs >= 2 responses with one score each, got "
                             f"{len(self.responses)} responses and {len(self.scores)} scores")


Example = PreferenceExample | ListExample
ReferenceLogps = torch.Tensor | list[torch.Tensor]


@dataclass
class PreferenceResult:
    steps: int
    history: list[dict[str, float]]
    resumed_from_step: int = 0
    fit: FitStats = field(default_factory=FitStats)  # rows truncated / dropped against max_length


def _uses_mean_logps(config: PreferenceConfig) -> bool:
    return config.loss_type == "ipo" and config.length_normalize


def _all_pairs(examples: Sequence[Example]) -> TypeGuard[Sequence[PreferenceExample]]:
    return all(isinstance(e, PreferenceExample) for e in examples)


def _all_lists(examples: Sequence[Example]) -> TypeGuard[Sequence[ListExample]]:
    return all(isinstance(e, ListExample) for e in examples)


def _kind(examples: Sequence[Example]) -> str:
    if _all_pairs(examples):
        return "pairs"
    if _all_lists(examples):
        return "lists"
    raise ValueError("a preference dataset is either all pair rows or all list rows")


def _packed(config: PreferenceConfig) -> bool:
    """``config.packing`` as decided by ``for_device`` (every trainer entry point calls it first)."""
    assert config.packing != "auto", "PreferenceConfig.for_device decides packing before any batch is built"
    return config.packing


def _autocast(config: PreferenceConfig, device: torch.device):
    if config.autocast_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


@dataclass
class PreferenceFit:
    """How a preference dataset fits ``max_length``: which rows train (``kept``, indices into the
    examples), the counts, and for pair rows their (chosen, rejected) token rows (None: dropped)."""

    kept: list[int]
    stats: FitStats
    pair_rows: list[tuple[TokenRow, TokenRow] | None] = field(default_factory=list)


def fit_examples(tokenizer, examples: Sequence[Example], max_length: int) -> PreferenceFit:
    """Tokenize and fit every row once (``logprobs.fit_row``): the one rule the reference pass and
    training share, so the rows they score are the same. A pair is truncated when either response
    (or its rationale) was cut, and dropped when either side (or its rationale row) does not fit; a
    list row is truncated / dropped when any of its responses is.

    Raises:
        ValueError: the examples mix pair and list rows, or a list response has no steps.
    """
    if _kind(examples) == "lists":
        assert _all_lists(examples)  # as _kind found every row
        prompts = [e.prompt for e in examples for _ in e.responses]
        fitted, _ = fit_stepped(tokenizer, prompts, [r for e in examples for r in e.responses], max_length)
        kept, truncated, offset = [], 0, 0
        for index, e in enumerate(examples):
            rows = range(offset, offset + len(e.responses))
            offset += len(e.responses)
            if all(fitted.rows[i] is not None for i in rows):
                kept.append(index)
                truncated += any(fitted.truncated[i] for i in rows)
        return PreferenceFit(kept, FitStats(len(examples), truncated, len(examples) - len(kept)))
    assert _all_pairs(examples)  # as _kind found every row
    joint = [e.joint for e in examples]
    chosen = fit_rows(tokenizer, [e.prompt for e in examples], [e.chosen for e in examples], max_length, joint)
    rejected = fit_rows(tokenizer, [e.prompt_rejected or e.prompt for e in examples],
                        [e.rejected for e in examples], max_length, joint)
    with_rationale = [i for i, e in enumerate(examples) if e.rationale]
    rationale = fit_rows(tokenizer, [_rationale_prompt(tokenizer, examples[i]) for i in with_rationale],
                         [examples[i].rationale or "" for i in with_rationale], max_length)
    rationale_fit = {i: (row is not None, cut) for i, row, cut in zip(with_rationale, rationale.rows,
                                                                      rationale.truncated, strict=True)}
    pair_rows: list[tuple[TokenRow, TokenRow] | None] = []
    kept, truncated = [], 0
    for index in range(len(examples)):
        c, r = chosen.rows[index], rejected.rows[index]
        rationale_ok, rationale_cut = rationale_fit.get(index, (True, False))
        if c is None or r is None or not rationale_ok:
            pair_rows.append(None)
            continue
        pair_rows.append((c, r))
        kept.append(index)
        truncated += chosen.truncated[index] or rejected.truncated[index] or rationale_cut
    return PreferenceFit(kept, FitStats(len(examples), truncated, len(examples) - len(kept)), pair_rows)


def _rationale_prompt(tokenizer, example: PreferenceExample) -> str:
    return example.rationale_prompt or rationale_prompt(tokenizer, example.prompt, example.chosen, example.rejected)


def pair_batch(rows: Sequence[tuple[TokenRow, TokenRow]], pad_id: int, config: PreferenceConfig) -> Batch:
    """Chosen rows then rejected rows, so one forward scores both halves of every pair."""
    return collate([c for c, _ in rows] + [r for _, r in rows], pad_id, _packed(config), config.pack_length)


def _list_token_logps(model, tokenizer, chunk: Sequence[ListExample], config: PreferenceConfig, hidden: bool
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, list[int]]:
    """Token log-probs, the last hidden states at them (when ``hidden``, else None), the response
    mask, each token's step and each response's number of steps kept."""
    prompts = [e.prompt for e in chunk for _ in e.responses]
    responses = [r for e in chunk for r in e.responses]
    batch, step_ids = encode_stepped(tokenizer, prompts, responses, config.max_length, packed=_packed(config),
                                     pack_length=config.pack_length)
    n_steps_kept = (step_ids.max(dim=1).values + 1).tolist()  # on the host: no device sync per response
    device = model_device(model)
    if hidden:
        token_logps, last_hidden = response_token_logprobs(model, batch.to(device), return_hidden=True)
    else:
        token_logps, last_hidden = response_token_logprobs(model, batch.to(device)), None
    return token_logps, last_hidden, batch.response_mask.to(device), step_ids.to(device), n_steps_kept


@overload
def reference_logprobs(reference: LoadedModel, examples: Sequence[PreferenceExample], config: PreferenceConfig,
                       batch_size: int = 16, on_batch: Callable[[int], None] | None = None) -> torch.Tensor: ...


@overload
def reference_logprobs(reference: LoadedModel, examples: Sequence[ListExample], config: PreferenceConfig,
                       batch_size: int = 16, on_batch: Callable[[int], None] | None = None) -> list[torch.Tensor]: ...


@overload
def reference_logprobs(reference: LoadedModel, examples: Sequence[Example], config: PreferenceConfig,
                       batch_size: int = 16, on_batch: Callable[[int], None] | None = None) -> ReferenceLogps: ...


@torch.no_grad()
def reference_logprobs(reference: LoadedModel, examples: Sequence[Example], config: PreferenceConfig,
                       batch_size: int = 16, on_batch: Callable[[int], None] | None = None) -> ReferenceLogps:
    """Pairs: [N, 2] (chosen, rejected) sequence log-probs. Lists: per row an [n, R] tensor of
    token log-probs (TPO needs them per step). Computed once per round, then cached. A row that
    ``fit_examples`` drops gets NaN ([N, 2] row, or an [n, 1] tensor for a list row): training
    skips exactly those rows."""
    reference.model.eval()
    device = model_device(reference.model)
    config = config.for_device(device.type)
    lists = _kind(examples) == "lists"
    average = _uses_mean_logps(config)
    fit = fit_examples(reference.tokenizer, examples, config.max_length)
    pairs_out = torch.full((len(examples), 2), math.nan, dtype=torch.float64)
    lists_out: list[torch.Tensor] = [torch.full((len(e.responses), 1), math.nan, dtype=torch.float64)
                                     for e in examples if isinstance(e, ListExample)]
    if on_batch and fit.stats.dropped:
        on_batch(fit.stats.dropped)
    for start in range(0, len(fit.kept), batch_size):
        index = fit.kept[start:start + batch_size]
        chunk = [examples[i] for i in index]
        with _autocast(config, device):
            if lists:
                assert _all_lists(chunk)  # as _kind found every row
                token_logps, _, _, _, _ = _list_token_logps(reference.model, reference.tokenizer, chunk, config,
                                                            hidden=False)
                offset = 0
                for i, e in zip(index, chunk, strict=True):
                    lists_out[i] = token_logps[offset:offset + len(e.responses)].double().cpu()
                    offset += len(e.responses)
            else:
                rows = [row for row in (fit.pair_rows[i] for i in index) if row is not None]
                batch = pair_batch(rows, cast(int, reference.tokenizer.pad_token_id), config).to(device)
                logps = sequence_logprobs(reference.model, batch, average=average).double().cpu()
                pairs_out[index] = torch.stack([logps[: len(chunk)], logps[len(chunk):]], dim=-1)
        if on_batch:
            on_batch(len(chunk))
    return lists_out if lists else pairs_out


def _rationale_logps(model, tokenizer, chunk: Sequence[PreferenceExample], config: PreferenceConfig) -> torch.Tensor:
    """Sum log π_θ(r | x_rat) for the rows that carry a rationale (others: 0, masked by caller)."""
    rows = [e for e in chunk if e.rationale]
    prompts = [_rationale_prompt(tokenizer, e) for e in rows]
    rationales = [e.rationale for e in rows if e.rationale]  # all of rows: the test only narrows the type
    batch = encode_pairs(tokenizer, prompts, rationales, config.max_length,
                         packed=_packed(config), pack_length=config.pack_length).to(model_device(model))
    values = sequence_logprobs(model, batch)
    full = torch.zeros(len(chunk), dtype=values.dtype, device=values.device)
    full[torch.tensor([i for i, e in enumerate(chunk) if e.rationale], device=values.device)] = values
    return full


def _pair_step(model, tokenizer, chunk: Sequence[PreferenceExample], rows: Sequence[tuple[TokenRow, TokenRow]],
               ref: torch.Tensor, config: PreferenceConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    device = model_device(model)
    batch = pair_batch(rows, tokenizer.pad_token_id, config).to(device)
    logps = sequence_logprobs(model, batch, average=_uses_mean_logps(config)).float()
    policy_chosen, policy_rejected = logps[: len(chunk)], logps[len(chunk):]
    ref = ref.to(device=device, dtype=logps.dtype)
    h = f_divergence_margin(policy_chosen - ref[:, 0], policy_rejected - ref[:, 1], config.divergence, config.alpha)
    per_pair = [e.label_smoothing for e in chunk]
    if any(eps is not None for eps in per_pair):
        eps = torch.tensor([config.label_smoothing if v is None else v for v in per_pair], device=device)
        loss_type = "cdpo" if config.loss_type == "sigmoid" else config.loss_type
        losses = loss_from_margin(h, loss_type, config.beta, eps)
    else:
        losses = loss_from_margin(h, config.loss_type, config.beta, config.label_smoothing)
    metrics: dict[str, torch.Tensor] = {}
    if any(e.rationale for e in chunk):
        rationale_logp = _rationale_logps(model, tokenizer, chunk, config).float()
        has = torch.tensor([bool(e.rationale) for e in chunk], device=device)
        losses = losses + torch.where(has,
                                      rationale_term(rationale_logp, config.rationale_gamma, config.rationale_form),
                                      torch.zeros_like(losses))
        metrics["train/rationale_logp"] = rationale_logp[has].mean().detach()
    metrics.update({f"train/{k}": v for k, v in preference_metric_tensors(
        policy_chosen.detach(), policy_rejected.detach(), ref[:, 0], ref[:, 1], config.beta).items()})
    return losses.mean(), metrics


def _list_step(model, tokenizer, chunk: Sequence[ListExample], ref: Sequence[torch.Tensor], config: PreferenceConfig
               ) -> tuple[torch.Tensor, dict[str, float]]:
    asr = config.tpo_adaptive_step_reward
    token_logps, hidden, mask, step_ids, n_steps_kept = _list_token_logps(model, tokenizer, chunk, config, hidden=asr)
    width = token_logps.shape[1]
    losses, correct, ordered = [], 0, 0
    offset = 0
    for e, ref_row in zip(chunk, ref, strict=True):
        n = len(e.responses)
        rows = slice(offset, offset + n)
        offset += n
        ref_tokens = torch.zeros((n, width), dtype=token_logps.dtype, device=token_logps.device)
        r_width = min(width, ref_row.shape[1])
        ref_tokens[:, width - r_width:] = ref_row[:, ref_row.shape[1] - r_width:].to(ref_tokens)
        ratios = (token_logps[rows].float() - ref_tokens.float()) * mask[rows]
        scores = torch.tensor(e.scores, dtype=ratios.dtype, device=ratios.device)
        steps, counts = step_ids[rows], n_steps_kept[rows]
        step_hidden = ([step_means(h.float(), s, k).detach() for h, s, k in zip(hidden[rows], steps, counts)]
                       if hidden is not None else None)  # hidden: kept when asr
        top = max(range(n), key=lambda i: (e.scores[i], -i))  # argmax, first on ties
        rewards = []
        for i in range(n):
            per_step = step_means(ratios[i], steps[i], counts[i])
            weights = asr_weights(step_hidden[i], step_hidden[top]) if step_hidden is not None else None
            rewards.append(response_reward(per_step, weights))
        rewards_t = torch.stack(rewards)
        losses.append(tpo_loss(rewards_t, scores, config.beta, config.tpo_lambda_weighting))
        better = scores[:, None] > scores[None, :]
        correct += int(((rewards_t[:, None] > rewards_t[None, :]) & better).sum())
        ordered += int(better.sum())
    loss = torch.stack(losses).mean()
    return loss, {"train/list_pair_accuracy": correct / max(1, ordered)}


def train_preference(policy: LoadedModel, examples: Sequence[Example], ref_logps: ReferenceLogps,
                     config: PreferenceConfig, seed: int, on_step: StepCallback | None = None,
                     checkpointer: TrainingCheckpointer | None = None,
                     after_step: Callable[[int], None] | None = None) -> PreferenceResult:
    """``checkpointer``: save a resume state every few steps and continue from one if present.
    ``after_step``: called once a step (and its resume state) is done — the fault-injection hook."""
    if not examples:
        raise ValueError("no preference pairs to train on")
    lists = _kind(examples) == "lists"
    expected = len(examples) if lists else (len(examples), 2)
    got = tuple(ref_logps.shape) if not lists and isinstance(ref_logps, torch.Tensor) else len(ref_logps)
    if got != expected:
        raise ValueError(f"reference log-probs have shape {got}, expected {expected}")
    fit = fit_examples(policy.tokenizer, examples, config.max_length)
    if not fit.kept:
        raise ValueError(f"none of the {len(examples)} preference rows fits max_length {config.max_length}: every "
                         f"prompt leaves fewer than a few tokens for its responses; raise max_length")
    stale = [i for i in fit.kept if not bool(torch.isfinite(ref_logps[i]).all())]
    if stale:
        raise ValueError(f"reference log-probs of rows {stale[:5]} are NaN, but the rows fit max_length "
                         f"{config.max_length}: they were computed for another max_length; recompute them")
    model = policy.model
    if config.disable_dropout:
        changed = disable_dropout(model)
        logger.info("preference.disable_dropout: set %d dropout rates of the policy to 0 (reference log-probs come "
                    "from a dropout-free forward)", changed)
    elif any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
        logger.warning("preference.disable_dropout is false: the policy trains with dropout on, the reference "
                       "log-probs were computed without it")
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()  # LoRA: frozen embeddings would cut the graph
    model.train()
    device = model_device(model)
    config = config.for_device(device.type)
    total = n_steps(len(fit.kept), config.batch_size, config.epochs)
    stepper = make_stepper(model, config.lr, total, config.warmup_steps, config.max_grad_norm, config.batch_size,
                           config.deepspeed_config, bf16=config.autocast_bf16,
                           bf16_master_weights=config.bf16_master_weights)
    uncompile = _compile_decoder(model) if config.compile_model else None
    history: list[dict[str, float]] = []
    world = current_world()
    resumable = _resumable(checkpointer, stepper)
    done = (checkpointer.restore(stepper.resume_module(), stepper.optimizer, stepper.scheduler, history)
            if resumable and isinstance(stepper, PlainStepper) else 0)  # _resumable implies a PlainStepper
    if done and isinstance(stepper, PlainStepper):
        stepper.after_restore()  # the master weights, when bf16_master_weights, back into the model
    reader = DeferredMetrics(history, on_step)
    for step, index in enumerate(seeded_batches(len(fit.kept), config.batch_size, config.epochs, seed), start=1):
        if step <= done:
            continue  # taken before the resume state was saved; the batch order is a function of the seed
        mine = [fit.kept[i] for i in shard(index, world)]  # the whole batch in one process; a rank's share
        if mine:
            chunk = [examples[i] for i in mine]
            with _autocast(config, device):
                if lists:
                    assert _all_lists(chunk)  # as _kind found every row
                    loss, metrics = _list_step(model, policy.tokenizer, chunk, [ref_logps[i] for i in mine], config)
                else:
                    # pair rows were fitted above, and their reference log-probs are the [N, 2] tensor checked above
                    rows = [row for row in (fit.pair_rows[i] for i in mine) if row is not None]
                    assert _all_pairs(chunk) and len(rows) == len(chunk) and isinstance(ref_logps, torch.Tensor)
                    loss, metrics = _pair_step(model, policy.tokenizer, chunk, rows, ref_logps[mine], config)
            stepper.backward(loss * loss_weight(len(mine), len(index), world) if world.distributed else loss)
        elif isinstance(stepper, PlainStepper):
            loss, metrics = torch.zeros((), device=device), {}  # a last, short batch left this rank nothing
        else:
            raise ValueError(f"batch of {len(index)} cannot feed {world.size} DeepSpeed ranks: make the number "
                             f"of examples per epoch a multiple of preference.batch_size")
        grad_norm = stepper.step()
        reader.push(step, {"train/loss": loss.detach(), "train/grad_norm": grad_norm, "train/lr": stepper.last_lr(),
                           **metrics})
        if resumable and isinstance(stepper, PlainStepper) and step % checkpointer.every == 0 and step < total:
            reader.flush()  # the saved history must include this step
            checkpointer.maybe_save(step, total, stepper.resume_module(), stepper.optimizer, stepper.scheduler,
                                    history)
        if after_step:
            after_step(step)
    reader.flush()
    stepper.finish()
    if uncompile:
        uncompile()
    if config.gradient_checkpointing:
        model.gradient_checkpointing_disable()
    model.eval()
    return PreferenceResult(steps=total, history=history, resumed_from_step=done, fit=fit.stats)


def _compile_decoder(model: torch.nn.Module) -> Callable[[], None]:
    """``torch.compile`` the decoder's forward in place (what ``response_token_logprobs`` runs; the LM
    head stays the fused one); returns what undoes it. Shapes change from batch to batch: after the
    second, dynamo compiles for dynamic shapes instead of once per shape."""
    decoder = cast(torch.nn.Module, cast(Any, model).get_decoder())
    decoder.forward = torch.compile(decoder.forward, dynamic=None)

    def undo() -> None:
        del decoder.forward  # the instance attribute: the class's forward again

    return undo


def _resumable(checkpointer: TrainingCheckpointer | None, stepper) -> TypeGuard[TrainingCheckpointer]:
    """Whether mid-training resume states are written: a checkpointer, enabled, and a ``PlainStepper``."""
    if checkpointer is None or not checkpointer.enabled:
        return False
    if not isinstance(stepper, PlainStepper):
        # a DeepSpeed engine shards optimizer state across ranks and has its own checkpoint format
        warnings.warn("mid-training resume states are not written under DeepSpeed; a killed DeepSpeed "
                      "training restarts from step 0", stacklevel=3)
        return False
    return True
