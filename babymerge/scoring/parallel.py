"""Which process scores what: lm-eval's data-parallel contract, as its ``hf`` model keeps it."""

from __future__ import annotations

import os

import torch


class DataParallel:
    """A mixin for an lm-eval ``LM``: under ``accelerate launch`` (GPUs) or ``torchrun`` (GPUs or
    CPU processes) each process evaluates its share of the requests and lm-eval gathers the
    results through ``gather_object``. On CPU, Accelerate must be told so (``cpu=True``), else
    it sees one process and every rank would evaluate everything."""

    def _setup_parallel(self, device: str | None) -> None:
        self.accelerator = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import Accelerator

            on_cpu = not torch.cuda.is_available() or str(device or "").startswith("cpu")
            self.accelerator = Accelerator(cpu=on_cpu)
            self._rank = self.accelerator.process_index
            self._world_size = self.accelerator.num_processes
            self._device = self.accelerator.device
        elif device and not (device.startswith("cuda") and not torch.cuda.is_available()):
            self._device = torch.device(device)
        else:  # like lm-eval's hf model: the CLI's default "cuda:0" means "the GPU if there is one"
            self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def all_gather(self, tensor):
        return self.accelerator.gather(tensor) if self.accelerator else tensor

    def gather_object(self, obj, dst: int = 0):
        """lm-eval gathers every rank's per-sample metrics through this; without it only
        rank 0's share would be scored."""
        if not self.accelerator:
            return [obj]
        result = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj=obj, object_gather_list=result, dst=dst)
        return result

    def barrier(self) -> None:
        if self.accelerator:
            self.accelerator.wait_for_everyone()

    @property
    def device(self):
        return self._device
