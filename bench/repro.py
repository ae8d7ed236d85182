"""Wall time and memory of the whole study: `dvc repro -f`, then a no-op `dvc repro`.

Run from the project root with the pipeline's data cache seeded. Prints the wall time, the peak
resident memory of the largest single process (getrusage) and of the whole process tree at
once (sampled every 0.1 s), and the time of a `dvc repro` with nothing to do.

    python bench/repro.py
"""

import resource
import subprocess
import sys
import time

import psutil


def run_sampled(cmd):
    """Run cmd; return (seconds, peak summed RSS of it and its descendants in bytes)."""
    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}")
    return time.perf_counter() - start, peak


def main():
    seconds, tree_peak = run_sampled(["dvc", "repro", "-f"])
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    noop, _ = run_sampled(["dvc", "repro"])
    gib = 1024**3
    print(f"dvc repro -f   wall {seconds:7.1f} s ({seconds / 60:.2f} min)")
    print(f"               peak RSS, largest process {largest / gib:.2f} GiB")
    print(f"               peak RSS, all processes at once {tree_peak / gib:.2f} GiB")
    print(f"dvc repro      wall {noop:7.1f} s (nothing to do)")


if __name__ == "__main__":
    main()
