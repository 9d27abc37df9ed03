"""Data-parallel training across processes started by ``torchrun`` (one per GPU, on one node or
several), and the placement of models on this process's device.

Each rank takes an equal share of every batch; before the optimizer step the gradients are
averaged across ranks in one flattened all-reduce, each rank's loss having been weighted by its
share, so every rank applies the same update as one process on the whole batch would (tested on
CPU with gloo against a single process). Rank 0 alone writes checkpoints, metrics and results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_world() -> World:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return World(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                     int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def preferred_device() -> torch.device:
    """ALIGNFLOW_DEVICE (cpu | cuda | auto, the default): auto picks this rank's GPU when there is one."""
    wanted = os.environ.get("ALIGNFLOW_DEVICE", "auto")
    if wanted not in ("auto", "cpu", "cuda"):
        raise ValueError(f"ALIGNFLOW_DEVICE must be auto, cpu or cuda, not {wanted!r}")
    if wanted == "cpu" or (wanted == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("ALIGNFLOW_DEVICE=cuda but torch sees no CUDA device")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def check_local_ranks(nproc_per_node: int, visible_gpus: int | None = None) -> None:
    """Refuse, before anything starts, a launch with more ranks on this node than it has GPUs when
    the ranks will run on GPUs: otherwise rank N fails deep inside ``torch.cuda.set_device`` with
    "invalid device ordinal", after the reference pass has run. ``visible_gpus``: default what
    torch sees here (CUDA_VISIBLE_DEVICES applied). CPU ranks (gloo) have no such limit."""
    if preferred_device().type != "cuda":
        return
    gpus = torch.cuda.device_count() if visible_gpus is None else visible_gpus
    if nproc_per_node > gpus:
        raise ValueError(f"launch.nproc_per_node is {nproc_per_node} but this node has {gpus} visible GPU(s) "
                         f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): one rank per "
                         f"GPU — set launch.nproc_per_node ≤ {gpus} and the work pool's gpu_count to match, or "
                         f"ALIGNFLOW_DEVICE=cpu to train on CPU ranks")


def init_from_launcher() -> World:
    """Join the process group torchrun described in the environment (NCCL on GPUs, gloo on CPU)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError("not started by torchrun (RANK / WORLD_SIZE unset)")
    device = preferred_device()
    if device.type == "cuda":
        check_local_ranks(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return current_world()


def shard(index: list[int], world: World) -> list[int]:
    """This rank's contiguous share of a batch (sizes differ by at most one)."""
    base, extra = divmod(len(index), world.size)
    start = world.rank * base + min(world.rank, extra)
    return index[start:start + base + (1 if world.rank < extra else 0)]


def loss_weight(shard_size: int, batch_size: int, world: World) -> float:
    """Scale for a rank's mean loss so that the average over ranks is the whole batch's mean."""
    return shard_size * world.size / batch_size


def average_gradients(model: torch.nn.Module | list[torch.Tensor], world: World) -> None:
    """All ranks end with the mean gradient; a parameter a rank did not touch counts as zero. ``model``:
    a module (its trainable parameters) or the tensors themselves (e.g. fp32 master weights)."""
    if not world.distributed:
        return
    params = [p for p in model.parameters() if p.requires_grad] if isinstance(model, torch.nn.Module) else model
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    flat /= world.size
    offset = 0
    for param, grad in zip(params, grads, strict=True):
        n = grad.numel()
        param.grad = flat[offset:offset + n].view_as(param).clone()
        offset += n


def torchrun_command(module: str, args: list[str], nproc_per_node: int, nnodes: int = 1,
                     rdzv_endpoint: str | None = None, rdzv_id: str = "alignflow", python: str | None = None
                     ) -> list[str]:
    """The launch line: standalone on one node; c10d rendezvous at ``rdzv_endpoint`` across nodes
    (an Indexed Job's pods, each with its own node rank, reach rank 0 through a headless Service)."""
    import sys

    command = [python or sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    if nnodes == 1:
        command.append("--standalone")
    else:
        if not rdzv_endpoint:
            raise ValueError("nnodes > 1 needs a rendezvous endpoint (host:port of the first pod)")
        command += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}",
                    f"--rdzv-id={rdzv_id}"]
    return command + ["-m", module, *args]
