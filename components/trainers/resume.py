"""Mid-training checkpoints, so a killed training step resumes where it was instead of from zero.

Every ``every`` optimizer steps the trainer saves what continuing needs and nothing more: the
trainable parameters (a LoRA adapter, not the frozen base), the optimizer and schedule, the RNG
states and the metric history. The batch order is a pure function of the seed, so a resumed run
skips the batches already taken and ends bit-for-bit where an uninterrupted one would (tested).

The state is one file written atomically (temp + rename): a kill during the save leaves the
previous state. A fingerprint of what the training depends on (data, config, starting weights)
is stored with it; a state from different inputs is refused, never silently loaded.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignflow.components.platform.atomic import write_bytes_atomic

STATE_FILE = "train-state.pt"


class ResumeStateMismatch(ValueError):
    pass


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainingCheckpointer:
    """``directory=None`` or ``every=0``: no mid-training state (nothing saved, nothing resumed)."""

    directory: Path | None
    every: int
    fingerprint: str
    resumed_from_step: int = 0
    saves: int = field(default=0, init=False)

    @property
    def enabled(self) -> bool:
        return self.directory is not None and self.every > 0

    @property
    def path(self) -> Path:
        """One file per rank under torchrun: the weights agree across ranks, the RNG streams do not."""
        assert self.directory is not None
        from alignflow.components.platform.distributed import current_world

        rank = current_world().rank
        return Path(self.directory) / (STATE_FILE if rank == 0 else f"train-state.rank{rank}.pt")

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, history: list[dict[str, float]]) -> int:
        """Load a saved state into the live objects; returns the number of steps already done (0 if none)."""
        if not self.enabled or not self.path.exists():
            return 0
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        if state["fingerprint"] != self.fingerprint:
            raise ResumeStateMismatch(
                f"{self.path}: saved by a training with other inputs (fingerprint {state['fingerprint'][:12]}, "
                f"this one {self.fingerprint[:12]}); delete it to start over")
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in state["trainable"].items():
                named[name].copy_(value.to(named[name].device))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        history[:] = state["history"]
        self.resumed_from_step = int(state["step"])
        return self.resumed_from_step

    def maybe_save(self, step: int, total: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler, history: list[dict[str, float]]) -> bool:
        if not self.enabled or step % self.every or step >= total:
            return False  # the last step is saved as the checkpoint proper, not as a resume state
        trainable = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
        buffer = io.BytesIO()
        torch.save({"fingerprint": self.fingerprint, "step": step, "trainable": trainable,
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(), "history": [dict(h) for h in history]}, buffer)
        write_bytes_atomic(self.path, buffer.getvalue())
        self.saves += 1
        return True

    def clear(self) -> None:
        """After the final checkpoint is safely written: the resume state has no further use."""
        if self.enabled and self.path.exists():
            self.path.unlink()
