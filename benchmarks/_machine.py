"""One-line description of the machine a benchmark ran on, printed above its numbers."""

from __future__ import annotations

import os
import platform

import torch


def describe_machine(device: torch.device) -> str:
    """CPU model, core count, torch version and threads; the GPU name when ``device`` is CUDA."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text
