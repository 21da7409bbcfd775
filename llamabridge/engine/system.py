"""What the machine has: physical cores and available memory (for defaults that fit it)."""

from __future__ import annotations

import os


def physical_cores() -> int:
    """CPU cores, not hyper-threads (llama.cpp's decode gains nothing from the second thread of a core)."""
    try:
        cores, physical = set(), None
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    physical = value.strip()
                elif key == "core id":
                    cores.add((physical, value.strip()))
        if cores:
            return len(cores)
    except OSError:
        pass
    return max(1, os.cpu_count() or 1)


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable), or a guess of 4 GiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 << 30
