"""The launch line and the checks made before ranks start: sharding, torchrun arguments, device
choice, and the refusal of more GPU ranks than GPUs. (Two real CPU ranks train in
tests/integration/test_distributed_training.py; no GPU runs here, so the CUDA branch is checked
through the GPU count it is given.)"""

from __future__ import annotations

import pytest
import torch

from alignflow.components.platform.distributed import (
    World,
    check_local_ranks,
    preferred_device,
    shard,
    torchrun_command,
)


def test_shards_cover_a_batch_once_and_differ_by_at_most_one():
    for size in (1, 2, 3, 4):
        for n in (0, 1, 5, 9):
            parts = [shard(list(range(n)), World(rank, size)) for rank in range(size)]
            assert sum(parts, []) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_torchrun_command_is_standalone_on_one_node_and_rendezvous_across_nodes():
    one = torchrun_command("alignflow.components.stages.train_entry", ["spec.json"], 4, python="py")
    assert one == ["py", "-m", "torch.distributed.run", "--nproc-per-node=4", "--standalone",
                   "-m", "alignflow.components.stages.train_entry", "spec.json"]
    many = torchrun_command("m", [], 8, nnodes=2, rdzv_endpoint="job-0.svc:29500", python="py")
    assert "--nnodes=2" in many and "--rdzv-endpoint=job-0.svc:29500" in many and "--standalone" not in many
    with pytest.raises(ValueError, match="rendezvous endpoint"):
        torchrun_command("m", [], 8, nnodes=2, python="py")


def test_more_gpu_ranks_than_gpus_are_refused_before_launch(monkeypatch):
    monkeypatch.setenv("ALIGNFLOW_DEVICE", "cuda")
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    check_local_ranks(2, visible_gpus=2)
    with pytest.raises(ValueError, match=r"nproc_per_node is 4 but this node has 2 visible GPU\(s\) "
                                         r"\(CUDA_VISIBLE_DEVICES=0,1\)"):
        check_local_ranks(4, visible_gpus=2)
    # CPU ranks (gloo) are not limited by GPUs
    monkeypatch.setenv("ALIGNFLOW_DEVICE", "cpu")
    check_local_ranks(4, visible_gpus=0)


def test_device_choice_follows_alignflow_device(monkeypatch):
    monkeypatch.setenv("ALIGNFLOW_DEVICE", "cpu")
    assert preferred_device().type == "cpu"
    monkeypatch.setenv("ALIGNFLOW_DEVICE", "gpu")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        preferred_device()
    monkeypatch.setenv("ALIGNFLOW_DEVICE", "cuda")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        preferred_device()
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert preferred_device() == torch.device("cuda", 3)
