"""How a trainer applies a step: plain PyTorch, or a DeepSpeed ZeRO engine.

Trainers compute a loss and hand it to a ``Stepper``; the stepper owns backward, clipping,
the optimizer and the schedule. The plain stepper is AdamW + global-norm clipping. The
DeepSpeed stepper wraps the same AdamW and schedule in a ZeRO-2/3 engine described by a JSON
file (``infra/deepspeed/zero{2,3}.json``), so a multi-GPU job (torchrun/deepspeed launcher,
one process per GPU) runs the very same trainer code; with no launcher it starts a one-process
group itself (gloo on CPU, nccl on GPU) — how the path is tested on machines without GPUs.

After training, ``finish`` hands back an ordinary module: hooks removed and, under ZeRO-3,
full parameters gathered back in place, so evaluation and ``save_pretrained`` work unchanged.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch

from alignflow.components.platform.distributed import average_gradients, current_world
from alignflow.components.trainers.common import clip_and_step, make_optimizer, model_device

if TYPE_CHECKING:
    from torch.optim.lr_scheduler import _LRScheduler


class Stepper(Protocol):
    def backward(self, loss: torch.Tensor) -> None: ...

    def step(self) -> torch.Tensor | float:
        """Clip, update, advance the schedule, zero the grads; return the pre-clip grad norm."""
        ...

    def last_lr(self) -> float: ...

    def finish(self) -> None:
        """Leave the model usable as a plain module."""
        ...


class PlainStepper:
    def __init__(self, model: torch.nn.Module, lr: float, total_steps: int, warmup_steps: int,
                 max_grad_norm: float) -> None:
        self.model, self.max_grad_norm = model, max_grad_norm
        self.optimizer, self.scheduler = make_optimizer(model, lr, total_steps, warmup_steps)
        self.world = current_world()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> torch.Tensor:
        average_gradients(self.model, self.world)  # a no-op in one process
        return clip_and_step(self.model, self.optimizer, self.scheduler, self.max_grad_norm)

    def last_lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])  # a float here: the optimizer's lr is no tensor

    def finish(self) -> None:
        pass

    def resume_module(self) -> torch.nn.Module:
        """What resume states save and restore (the model's trainable parameters)."""
        return self.model

    def after_restore(self) -> None:
        """Called once a resume state is loaded."""


class MasterWeightsStepper(PlainStepper):
    """bf16 parameters with fp32 master weights.

    Forward and backward run on bf16 weights — no autocast casting every weight on every matmul, half
    the weight and gradient memory traffic — while the optimizer owns an fp32 copy of every trainable
    weight: each step takes the bf16 gradients into fp32, averages them across ranks, clips and steps the
    fp32 copy, and writes it back to the model rounded to bf16. So updates smaller than bf16's spacing
    accumulate instead of being rounded away (what pure-bf16 training loses), and the optimizer state is
    fp32 as before. Buffers (rotary frequencies) stay in their dtype; frozen weights (a LoRA base) run in
    bf16 and get their exact values back at ``finish``, which also hands back the fp32 master weights as
    the model's: the checkpoint holds what the optimizer trained, not its bf16 rounding.
    """

    def __init__(self, model: torch.nn.Module, lr: float, total_steps: int, warmup_steps: int,
                 max_grad_norm: float, dtype: torch.dtype = torch.bfloat16) -> None:
        self.model, self.max_grad_norm = model, max_grad_norm
        self.world = current_world()
        named = list(model.named_parameters())
        self.trainable = [(n, p) for n, p in named if p.requires_grad]
        if not self.trainable:
            raise ValueError("model has no trainable parameters")
        self.masters = [p.detach().clone().float().requires_grad_(True) for _, p in self.trainable]
        # frozen weights are only cast: their exact values wait on the host until finish
        self.frozen = [(p, p.detach().to("cpu", copy=True)) for _, p in named if not p.requires_grad
                       and p.is_floating_point()]
        self.original_dtypes = {id(p): p.dtype for _, p in named}
        with torch.no_grad():
            for _, p in named:
                if p.is_floating_point():
                    p.data = p.data.to(dtype)
        self.optimizer, self.scheduler = make_optimizer(self.masters, lr, total_steps, warmup_steps)

    def step(self) -> torch.Tensor:
        for master, (_, p) in zip(self.masters, self.trainable, strict=True):
            master.grad = p.grad.float() if p.grad is not None else torch.zeros_like(master)
            p.grad = None
        average_gradients(self.masters, self.world)  # a no-op in one process
        grad_norm = torch.nn.utils.clip_grad_norm_(self.masters, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._write_back()
        return grad_norm.detach()

    def _write_back(self) -> None:
        with torch.no_grad():
            for master, (_, p) in zip(self.masters, self.trainable, strict=True):
                p.copy_(master)  # rounded to nearest in the parameter's dtype

    def resume_module(self) -> torch.nn.Module:
        """What resume states save and restore: the fp32 masters, under the model's parameter names."""
        return _NamedTensors([(n, m) for (n, _), m in zip(self.trainable, self.masters, strict=True)])

    def after_restore(self) -> None:
        self._write_back()

    def finish(self) -> None:
        with torch.no_grad():
            for p in self.model.parameters():
                p.data = p.data.to(self.original_dtypes[id(p)])
            for master, (_, p) in zip(self.masters, self.trainable, strict=True):
                p.copy_(master)
            for p, exact in self.frozen:
                p.copy_(exact)


class _NamedTensors(torch.nn.Module):
    """A module whose ``named_parameters`` are the given (name, tensor) pairs (the resume state's view)."""

    def __init__(self, named: list[tuple[str, torch.Tensor]]) -> None:
        super().__init__()
        self._named = named

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, torch.nn.Parameter]]:
        return iter(cast(list[tuple[str, torch.nn.Parameter]], self._named))


# Fields the trainer's own config decides; a DeepSpeed file may leave them out or say "auto".
_OWNED_BY_TRAINER = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping")
# Sections the trainer provides itself: the same AdamW and warmup schedule as without DeepSpeed.
_REFUSED_SECTIONS = ("optimizer", "scheduler")


def load_deepspeed_config(path: str | Path, batch_size: int, max_grad_norm: float, bf16: bool) -> dict[str, Any]:
    """Read a DeepSpeed JSON and fill in what the trainer's config owns.

    A value the file sets explicitly must agree with the trainer's config: two sources of
    truth for the batch size would make the logged params lie about the run."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM reads like none, in any locale
    except FileNotFoundError:
        raise FileNotFoundError(f"DeepSpeed config {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a DeepSpeed config is a JSON object, got {type(config).__name__}")
    for section in _REFUSED_SECTIONS:
        if section in config:
            raise ValueError(f"{path}: field '{section}': remove it — the trainer passes its own AdamW and "
                             f"warmup schedule (lr, warmup_steps come from the preference/reward config)")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    wanted = {"train_micro_batch_size_per_gpu": batch_size, "gradient_accumulation_steps": 1,
              "gradient_clipping": max_grad_norm}
    for key in _OWNED_BY_TRAINER:
        given = config.get(key, "auto")
        if given != "auto" and given != wanted[key]:
            raise ValueError(f"{path}: field '{key}' is {given!r} but the trainer's config gives {wanted[key]!r}; "
                             f"set it to \"auto\" or remove it")
        config[key] = wanted[key]
    total = batch_size * world_size
    if config.get("train_batch_size", "auto") not in ("auto", total):
        raise ValueError(f"{path}: field 'train_batch_size' is {config['train_batch_size']!r}, expected "
                         f"{total} (batch_size {batch_size} × {world_size} processes) or \"auto\"")
    config["train_batch_size"] = total
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"{path}: field 'zero_optimization.stage' must be 0, 1, 2 or 3, got {stage!r}")
    for precision in ("bf16", "fp16"):
        section = config.get(precision)
        if isinstance(section, dict) and section.get("enabled") == "auto":
            section["enabled"] = bf16 and precision == "bf16"
    # torch's AdamW is not on DeepSpeed's list of ZeRO-tested optimizers, though it works with it
    config.setdefault("zero_allow_untested_optimizer", True)
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_process_group(device: torch.device) -> None:
    """Join the launcher's process group, or start a one-process group when there is none."""
    import deepspeed

    if not torch.distributed.is_initialized() and "RANK" not in os.environ:
        os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0",
                           "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
    if device.type == "cpu" and os.environ.get("WORLD_SIZE") == "1":
        _skip_shared_memory_allreduce()
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo", verbose=False)


def _skip_shared_memory_allreduce() -> None:
    """DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce (g++, 45-160 s on 2 cores) the first time
    each install starts a group, under a file lock that a process killed mid-build leaves behind, so every later
    start waits on it forever. A one-rank group has nothing to reduce across: mark the op unavailable so DeepSpeed
    uses gloo as it does on platforms without the op (DeepSpeed keeps edits to this dict by design)."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


class DeepSpeedStepper:
    def __init__(self, model: torch.nn.Module, lr: float, total_steps: int, warmup_steps: int,
                 config: dict[str, Any]) -> None:
        """Clipping comes from the config's gradient_clipping (``load_deepspeed_config`` sets it)."""
        try:
            import deepspeed
        except ImportError:
            raise ImportError("a DeepSpeed config was given but deepspeed is not installed: "
                              "pip install deepspeed==0.19.8") from None
        ensure_process_group(model_device(model))
        optimizer, scheduler = make_optimizer(model, lr, total_steps, warmup_steps)
        self.model, self.stage = model, config.get("zero_optimization", {}).get("stage", 0)
        # deepspeed annotates lr_scheduler as the legacy _LRScheduler; it takes any LRScheduler
        self.engine, _, _, self.scheduler = deepspeed.initialize(model=model, optimizer=optimizer,
                                                                 lr_scheduler=cast("_LRScheduler", scheduler),
                                                                 config=config)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> float:
        self.engine.step()  # clips by gradient_clipping, steps the optimizer and the schedule, zeroes grads
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def last_lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def finish(self) -> None:
        """ZeRO-3 keeps only a shard of each parameter in the module: gather them back in place
        before removing the engine's hooks, so the model is whole for eval and saving."""
        params = list(self.model.parameters())
        if self.stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(params):
                full = [p.data.clone() for p in params]
        self.engine.destroy()
        if self.stage == 3:
            for p, data in zip(params, full, strict=True):
                p.data = data


def make_stepper(model: torch.nn.Module, lr: float, total_steps: int, warmup_steps: int, max_grad_norm: float,
                 batch_size: int, deepspeed_config: str | None, bf16: bool = False,
                 bf16_master_weights: bool = False) -> Stepper:
    if bf16_master_weights:
        if deepspeed_config is not None:
            raise ValueError("bf16 master weights and a DeepSpeed config: DeepSpeed's bf16 section sets the precision")
        return MasterWeightsStepper(model, lr, total_steps, warmup_steps, max_grad_norm)
    if deepspeed_config is None:
        return PlainStepper(model, lr, total_steps, warmup_steps, max_grad_norm)
    config = load_deepspeed_config(deepspeed_config, batch_size, max_grad_norm, bf16)
    return DeepSpeedStepper(model, lr, total_steps, warmup_steps, config)
