"""Shared by the benchmarks: the one-line machine description printed above their numbers, wall-clock timing, and
model settings given on the command line."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import torch
import yaml


def describe_machine(device: torch.device) -> str:
    """CPU model, core count, torch version and threads; the GPU name when ``device`` is CUDA."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} thread{'s' if threads != 1 else ''}"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def wall_times(step: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``step()`` after ``warmup`` untimed ones (CUDA synchronised)."""
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def model_settings(items: list[str], option: str) -> dict:
    """``KEY=VALUE`` command-line items -> model settings, each value parsed as YAML (``head_pool=2`` -> 2,
    ``widths=[1,2]`` -> a list); ``SystemExit`` naming ``option`` for an item without ``=``."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{option} takes KEY=VALUE, got {item!r}")
        settings[key] = yaml.safe_load(value)
    return settings
