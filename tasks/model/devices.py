"""This process's place in a multi-process launch (torchrun / accelerate launch), and its device's name."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch


@dataclass
class DistInfo:
    """This process's place in a multi-process launch (torchrun / accelerate launch), or a single process."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def detect(cls, device: str | None = None) -> DistInfo:
        """Single process unless started by a launcher; the launcher's variables name the rank and world."""
        # WORLD_SIZE is the launcher protocol (set by torchrun and accelerate launch), not a setting.
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            state = PartialState(cpu=not torch.cuda.is_available())  # CPU processes: gloo
            return cls(state.process_index, state.num_processes, torch.device(state.device))
        if device:
            return cls(device=torch.device(device))
        return cls(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))

    def barrier(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()


def device_name(dist: DistInfo) -> str:
    device = dist.device
    if device.type == "cuda":
        name = f"cuda:{torch.cuda.get_device_name(device)}"
        return f"{name} x{dist.world}" if dist.world > 1 else name
    return f"cpu x{dist.world}" if dist.world > 1 else "cpu"
