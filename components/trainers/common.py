"""What every trainer shares: seeded batch order, AdamW on trainable params, warmup schedule."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import torch

StepCallback = Callable[[int, dict[str, float]], None]


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's parameters live: batches are moved there."""
    return next(model.parameters()).device


def seeded_batches(n_items: int, batch_size: int, epochs: int, seed: int) -> Iterator[list[int]]:
    order = list(range(n_items))
    for epoch in range(epochs):
        random.Random(seed + epoch).shuffle(order)
        for start in range(0, n_items, batch_size):
            yield order[start:start + batch_size]


def disable_dropout(model: torch.nn.Module) -> int:
    """Turn every dropout of ``model`` off, as TRL's ``DPOConfig(disable_dropout=True)`` does
    (``trl.trainer.utils.disable_dropout_in_model``: ``p = 0`` on every ``torch.nn.Dropout``), and
    further: float ``*dropout*`` attributes of modules (``LlamaAttention.attention_dropout``, read at
    each forward in training mode) and of the model's config (``attention_dropout``,
    ``hidden_dropout``...), so a checkpoint saved afterwards says what the weights were trained with.

    Why: DPO's loss compares the policy's log-probs with the reference's, computed once in eval mode
    (no dropout). With dropout on in the policy (``lora.dropout: 0.1``) two forwards of the same pair
    differed by 0.245 nats, noise of the size of the margins being learned.

    Args:
        model: the policy (a PEFT wrapper included: LoRA's ``lora_dropout`` holds ``nn.Dropout``s).

    Returns:
        How many dropout modules and attributes had a non-zero rate (0: nothing to disable).
    """
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            changed += module.p != 0
            module.p = 0.0
            continue
        for name, value in list(vars(module).items()):
            if "dropout" in name and isinstance(value, float) and not isinstance(value, bool):
                changed += value != 0
                setattr(module, name, 0.0)
    configs = [getattr(model, "config", None)]
    if configs[0] is not None and hasattr(configs[0], "get_text_config"):
        configs.append(configs[0].get_text_config())
    for config in configs:
        for name, value in list(vars(config).items()) if config is not None else ():
            if "dropout" in name and isinstance(value, float):
                changed += value != 0
                setattr(config, name, 0.0)
    return changed


def n_steps(n_items: int, batch_size: int, epochs: int) -> int:
    return epochs * ((n_items + batch_size - 1) // batch_size)


def make_optimizer(model: torch.nn.Module | list[torch.Tensor], lr: float, total_steps: int, warmup_steps: int
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``model``'s trainable parameters (or over the given tensors, e.g. fp32 master weights)."""
    params = [p for p in model.parameters() if p.requires_grad] if isinstance(model, torch.nn.Module) else model
    if not params:
        raise ValueError("model has no trainable parameters")
    # fused on GPU: one kernel for all parameters, and none of foreach's temporary copies
    fused = all(p.is_cuda for p in params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=fused)

    def factor(step: int) -> float:  # linear warmup, then linear decay to 10% of lr
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        remaining = max(1, total_steps - warmup_steps)
        return max(0.1, 1.0 - 0.9 * (step - warmup_steps) / remaining)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def clip_and_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: torch.optim.lr_scheduler.LambdaLR, max_grad_norm: float) -> torch.Tensor:
    """Clip, step, zero. Returns the pre-clip grad norm as a tensor (reading it syncs the device)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm.detach()


MetricValue = float | torch.Tensor


class DeferredMetrics:
    """Reads step t's metric tensors after step t+1 has been queued.

    Reading a GPU value waits for the device; doing it right after each step would stop the
    host from queueing the next step's kernels while the GPU finishes. One step late, the read
    overlaps with the next step's work, and all of a step's values come back in one transfer.
    """

    def __init__(self, history: list[dict[str, float]], on_step: StepCallback | None) -> None:
        self.history, self.on_step = history, on_step
        self.pending: tuple[int, dict[str, MetricValue]] | None = None

    def push(self, step: int, metrics: dict[str, MetricValue]) -> None:
        self.flush()
        self.pending = (step, metrics)

    def flush(self) -> None:
        if self.pending is None:
            return
        step, metrics = self.pending
        self.pending = None
        tensors = {k: v for k, v in metrics.items() if isinstance(v, torch.Tensor)}
        read: dict[str, float] = {}
        if tensors:
            device = next(iter(tensors.values())).device
            values = torch.stack([v.detach().float().reshape(()).to(device) for v in tensors.values()]).tolist()
            read = dict(zip(tensors, values, strict=True))
        resolved = {k: read[k] if k in read else float(v) for k, v in metrics.items()}
        self.history.append(resolved)
        if self.on_step:
            self.on_step(step, resolved)
