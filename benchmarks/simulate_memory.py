"""Peak resident memory of ``d4lenspinn simulate`` on a large set: flat in the number of images (target < 1.5 GB).

    python benchmarks/simulate_memory.py [--n-per-class 100000] [--preset model_i] [--seconds 120] [--threads 1]

Runs ``python -m d4lenspinn simulate`` (the package found from the current directory) in a subprocess into a
temporary folder (removed afterwards), samples its resident memory (VmRSS) and the images on disk every
``--interval`` seconds, and stops it with Ctrl-C (SIGINT) after ``--seconds`` unless it finishes first. The peak is
the child's ``ru_maxrss`` (``resource.getrusage(RUSAGE_CHILDREN)``). A stopped run has drawn and written the truth of
every lens (the first pass over all parameters) and part of the images: say so with the number.

Measured (2026-12-05, shared 2-core CPU, 1 thread, defaults): stopped after 124 s with the truth of all 375,000
lenses and 10,112 images written, resident 700-780 MB throughout, peak 883 MB (target < 1500 MB: met). The writer
before chunked lenses: 1070 MB peak for the same run (about 1 GB from the start), and 8.75 GB at 2,000,000 per class.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MB = 1500


def _rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB (None once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            line = next(line for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) / 1024


def _images_on_disk(out: Path) -> int:
    """``.npy`` images written so far under ``out``."""
    return sum(
        1 for folder in out.glob("*/*") if folder.is_dir() for entry in os.scandir(folder) if entry.name[0] != "."
    )


def _run(command: list[str], env: dict, out: Path, log_path: Path, seconds: float, interval: float) -> tuple:
    """Run ``command``, print samples every ``interval`` s, Ctrl-C it after ``seconds``: (exit code, stopped,
    elapsed s, last stderr line)."""
    start, stopped = time.perf_counter(), False
    with open(log_path, "w+") as log:  # a file, not a pipe: the progress bar never blocks the child
        # Ctrl-C must reach the child even when this script runs in the background (where SIGINT is ignored)
        default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
        child = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True, preexec_fn=default_sigint
        )
        print("| seconds | resident MB | images on disk |\n|---|---|---|")
        while child.poll() is None:
            try:
                child.wait(timeout=interval)
            except subprocess.TimeoutExpired:
                rss = _rss_mb(child.pid)
                print(f"| {time.perf_counter() - start:.0f} | {rss or 0:.0f} | {_images_on_disk(out)} |", flush=True)
                if time.perf_counter() - start >= seconds and not stopped:
                    child.send_signal(signal.SIGINT)
                    stopped = True
        log.seek(0)
        last = (log.read().strip().replace("\r", "\n").splitlines() or [""])[-1]
    return child.returncode, stopped, time.perf_counter() - start, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-class", type=int, default=100000)
    parser.add_argument("--preset", default="model_i")
    parser.add_argument("--seconds", type=float, default=120.0, help="stop the run (Ctrl-C) after this long")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the simulation")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="simulate_memory_") as root:
        out = Path(root) / "sim"
        command = [sys.executable, "-m", "d4lenspinn", "simulate", "--preset", args.preset]
        command += ["--n-per-class", str(args.n_per_class), "--out", str(out)]
        print(f"command: OMP_NUM_THREADS={args.threads} python {' '.join(command[1:])}")
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        code, stopped, elapsed, last = _run(command, env, out, Path(root) / "stderr.txt", args.seconds, args.interval)
        images, truth = _images_on_disk(out), (out / "truth.h5").exists()
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
    total = 3 * args.n_per_class + 3 * max(1, args.n_per_class // 4)
    print(f"\nexit code {code}; last line of stderr: {last}")
    how = "stopped with Ctrl-C" if stopped else "ran to the end"
    truth_text = "truth of all lenses written" if truth else "truth file not finished"
    print(f"{how} after {elapsed:.0f} s: {truth_text}, {images} of {total} images on disk")
    verdict = "met" if peak_mb < TARGET_MB else "NOT met"
    print(f"peak resident memory (ru_maxrss of the child): {peak_mb:.0f} MB; target < {TARGET_MB} MB: {verdict}")


if __name__ == "__main__":
    main()
