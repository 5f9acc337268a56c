"""How much host memory (RAM) this process can still take: ``tile="auto"``'s default budget on the
CPU, and ``lua-fast info``.

On the CPU an over-large forward is not an exception: Linux overcommits, the allocation succeeds,
and the kernel's OOM killer ends the whole process (a ComfyUI server, a Ray worker) once the pages
are touched. So the budget has to be known before the forward runs.

Linux only: ``/proc/meminfo``'s ``MemAvailable`` (free memory plus what the kernel can reclaim),
capped by the memory cgroup of the process and of each cgroup above it (v2: ``memory.max`` -
``memory.current``; v1: ``memory.limit_in_bytes`` - ``memory.usage_in_bytes``; the cgroup's
reclaimable page cache, ``inactive_file``, counted as free). The cgroup is where a container's
limit lies: a container limited to 8 GiB on a 64 GiB host reads about 60 GiB in ``MemAvailable``
and is killed at 8. Elsewhere (macOS, Windows) the figure is unknown: ``None``.

The same cgroups hold a container's CPU quota (``cpu_quota``), which PyTorch does not read: it
starts one thread per core of the host, so a container limited to 4 CPUs on a 64-core host runs
64 threads that the kernel throttles. ``lua-fast info`` reports it.
"""

from __future__ import annotations

import functools
from pathlib import Path

# A limit at or above this is "no limit" (cgroup v1 writes 2^63 rounded down to a page).
_UNLIMITED = 1 << 60


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return _UNLIMITED
    try:
        return int(text)
    except ValueError:
        return None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def meminfo_available(meminfo: str) -> int | None:
    """Bytes of ``MemAvailable`` in the text of ``/proc/meminfo`` (None if absent: kernels before 3.14)."""
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            fields = line.split()
            return int(fields[1]) * 1024 if len(fields) >= 2 and fields[1].isdigit() else None
    return None


def _cgroup_dirs(proc_cgroup: str, cgroup_root: Path, controller: str = "memory") -> list[tuple[Path, str]]:
    """(directory, version) of the process's ``controller`` cgroup and each one above it, from the
    text of ``/proc/self/cgroup``. Inside a cgroup namespace (most containers) the path reads ``/``
    and the container's own cgroup is mounted at the root."""
    found = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            # cgroup v2 alone, or the hybrid layout (v2 mounted at unified/ beside the v1 controllers)
            unified = (cgroup_root / "cgroup.controllers").exists()
            mount, version = (cgroup_root if unified else cgroup_root / "unified"), "v2"
        elif controller in controllers.split(","):
            mount, version = cgroup_root / controller, "v1"
        else:
            continue
        leaf = mount / path.lstrip("/")
        if not leaf.is_dir():  # a path from outside this mount namespace
            leaf = mount
        for directory in [leaf, *leaf.parents]:
            found.append((directory, version))
            if directory == mount:
                break
    return found


def cgroup_headroom(proc_cgroup: str, cgroup_root: Path) -> int | None:
    """Bytes left under the tightest memory-cgroup limit on the process, or None without a limit."""
    headroom = None
    for directory, version in _cgroup_dirs(proc_cgroup, cgroup_root):
        if version == "v2":
            limit, usage = _read_int(directory / "memory.max"), _read_int(directory / "memory.current")
            reclaimable = _stat_value(directory / "memory.stat", "inactive_file")
        else:
            limit, usage = _read_int(directory / "memory.limit_in_bytes"), _read_int(directory / "memory.usage_in_bytes")
            reclaimable = _stat_value(directory / "memory.stat", "total_inactive_file")
        if limit is None or usage is None or limit >= _UNLIMITED:
            continue
        left = max(0, limit - usage + min(reclaimable, usage))
        headroom = left if headroom is None else min(headroom, left)
    return headroom


def cpu_memory_available(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes of RAM this process can still take before the kernel refuses or kills it (Linux), or None
    where that cannot be read."""
    try:
        meminfo = (proc / "meminfo").read_text()
    except OSError:
        return None
    available = meminfo_available(meminfo)
    if available is None:
        return None
    try:
        proc_cgroup = (proc / "self" / "cgroup").read_text()
    except OSError:
        return available
    headroom = cgroup_headroom(proc_cgroup, cgroup_root)
    return available if headroom is None else min(available, headroom)


def _quota_cpus(directory: Path, version: str) -> float | None:
    if version == "v2":  # cpu.max: "<quota> <period>" in microseconds, or "max <period>"
        try:
            quota, _, period = (directory / "cpu.max").read_text().strip().partition(" ")
            return None if quota == "max" else int(quota) / int(period or 100000)
        except (OSError, ValueError, ZeroDivisionError):
            return None
    quota, period = _read_int(directory / "cpu.cfs_quota_us"), _read_int(directory / "cpu.cfs_period_us")
    if quota is None or period is None or quota <= 0 or period <= 0:  # (-1: no quota)
        return None
    return quota / period


def cpu_quota(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs' worth of time per second the process's cgroups allow (the tightest, e.g. 4.0 for a
    container run with ``--cpus 4``), or None without a quota or off Linux."""
    try:
        proc_cgroup = (proc / "self" / "cgroup").read_text()
    except OSError:
        return None
    quotas = [q for d, v in _cgroup_dirs(proc_cgroup, cgroup_root, "cpu") if (q := _quota_cpus(d, v)) is not None]
    return min(quotas) if quotas else None


def _status_bytes(key: str, status: Path = Path("/proc/self/status")) -> int | None:
    """A ``kB`` line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes, or None."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@functools.lru_cache(maxsize=None)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library: nothing to trim this way). Looked up once:
    ``ctypes.util.find_library`` runs ``ldconfig`` in a subprocess."""
    import ctypes
    import ctypes.util

    for find in (lambda: "libc.so.6", lambda: ctypes.util.find_library("c")):  # (the second only if needed)
        try:
            return ctypes.CDLL(find()).malloc_trim
        except (OSError, AttributeError, TypeError):  # (TypeError: find_library found nothing)
            continue
    return None


def reset_resident_peak() -> int | None:
    """Start measuring this process's peak resident set (``lua-fast bench`` on the CPU): freed heap is
    handed back to the system first (glibc's ``malloc_trim``: memory a previous forward freed would
    otherwise stay resident and hide the next one's growth), then the high-water mark ``VmHWM`` is
    reset (``/proc/self/clear_refs``, Linux 4.0+). Returns the resident bytes now, the base of
    :func:`resident_peak`, or None where the peak cannot be reset (not Linux, or a /proc that refuses
    the write)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_bytes("VmRSS")


def resident_peak() -> int | None:
    """The peak resident bytes since :func:`reset_resident_peak` (``VmHWM``), or None."""
    return _status_bytes("VmHWM")
