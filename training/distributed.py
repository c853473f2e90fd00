"""Tiny helpers for torchrun / DDP that do nothing on a single process.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; their presence is what turns DDP on.
"""

from __future__ import annotations

import hashlib
import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed(device_type: str) -> int:
    """Join the process group if launched by torchrun; return the local rank (0 otherwise).

    NCCL on CUDA, gloo on CPU.
    """
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return local_rank


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a list of numbers over all ranks (identity on one process)."""
    if not is_distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(obj, src: int = 0):
    """Send a picklable object from `src` to every rank (identity on one process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def check_replicas_agree(model: torch.nn.Module) -> str:
    """Raise if the ranks' copies of `model` differ; return the weights' sha256.

    DDP keeps replicas identical by averaging gradients; this proves it after training.
    """
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    hashes = [None] * get_world_size()
    dist.all_gather_object(hashes, digest.hexdigest())
    if any(h != hashes[0] for h in hashes):
        raise RuntimeError(f"DDP replicas disagree: weight sha256 per rank {hashes}")
    return hashes[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()
