"""How many CPU threads a starter model call uses: one per request under load, more for a big batch alone.

Torch's intra-op threads help one large forward pass on an idle machine, and hurt when several requests
run at once or other processes keep the cores busy: the threads then wait on each other. Measured on the
starter models (``benchmarks/starter_threads.py``, table in ``docs/starter_models.md``), so the default
policy (``threads=None``, "auto") is, per call:

* one thread when another starter call is already running in this process (concurrent requests), or
  when the machine is busy (1-minute load average above the core count minus one);
* otherwise, for a batch of at least :data:`BIG_BATCH` images or :data:`BIG_BATCH` * 4 texts, up to
  :data:`MAX_AUTO_THREADS` threads (never more than the cores);
* one thread for everything else (a small rerank request finishes before more threads pay off).

The auto policy never uses more threads than torch would (``torch.get_num_threads()``, which
``OMP_NUM_THREADS`` or ``torch.set_num_threads`` lower). ``threads=N`` (on
:class:`~mm_rerank_components.starter.StarterModels`, or the environment variable ``MM_RERANK_THREADS``)
fixes the count. The count is set for the calling thread only (torch's OpenMP setting is per thread) and
restored afterwards.

Example:
    >>> choose_threads(1, setting=3)
    3
    >>> choose_threads(2, setting=None, busy=True)
    1
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

#: Environment variable that fixes the thread count of every starter model call ("auto" = the policy).
ENV_VAR = "MM_RERANK_THREADS"
#: Images in one call from which several threads may pay off (texts: four times as many).
BIG_BATCH = 16
#: The most threads the auto policy uses for one call.
MAX_AUTO_THREADS = 4

_in_flight = 0
_in_flight_lock = threading.Lock()
_load_cache: tuple[float, float] = (0.0, 0.0)


def set_process_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for the models in this process: torch's thread count and the starter
    models' own per-call policy (:data:`ENV_VAR`, which would otherwise still pick 1 under load).

    Torch is not imported for this (its import is most of a cold ``mm-rerank query`` that needs no torch
    model): when it is not loaded yet, ``OMP_NUM_THREADS`` is set instead, which torch reads as it loads.

    Example:
        >>> set_process_threads(0)
        Traceback (most recent call last):
        ...
        ValueError: --threads must be >= 1, got 0
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    os.environ[ENV_VAR] = str(threads)
    set_blas_threads(threads)
    torch = sys.modules.get("torch")
    if torch is None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        return
    torch.set_num_threads(threads)


#: OpenBLAS entry points that set its thread count, by build (numpy's bundled scipy-openblas, a system one)
_BLAS_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


def set_blas_threads(threads: int) -> bool:
    """Set the thread count of the OpenBLAS this process loaded (numpy's matrix products, which the
    torch-free text encoder runs on); returns whether one was found (Linux only: it reads
    ``/proc/self/maps``).

    OpenBLAS reads ``OPENBLAS_NUM_THREADS`` only as it loads, which is when numpy is first imported, before
    any command runs; its default, one thread per core, spins on a busy 2-core machine: a cold query's 15
    passages took 2.4 s with 2 threads against 0.74 s with 1 at load 5.5.

    Example:
        >>> isinstance(set_blas_threads(1), bool)
        True
    """
    import ctypes

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            paths = sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and "/" in line})
    except OSError:
        return False
    found = False
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _BLAS_SETTERS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(ctypes.c_int(threads))
                found = True
                break
    if not found:
        logger.debug("no OpenBLAS loaded here whose thread count could be set")
    return found


def parse_threads(value: object, what: str = "threads") -> int | None:
    """``None``/``"auto"`` -> None (the policy), a positive int (or its string) -> that int.

    Example:
        >>> parse_threads("2"), parse_threads("auto")
        (2, None)
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    try:
        count = int(value) if not isinstance(value, bool) else 0  # type: ignore[call-overload]
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise ValueError(f"{what} must be a positive int or 'auto', got {value!r}")
    return count


def _env_threads() -> int | None:
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return None
    try:
        return parse_threads(raw, ENV_VAR)
    except ValueError:
        logger.warning("ignoring %s=%r: use a positive int or 'auto'", ENV_VAR, raw)
        return None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one).

    Example:
        >>> usable_cores() >= 1
        True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


def machine_busy() -> bool:
    """Whether the 1-minute load average exceeds the core count minus one (read at most once a second).

    Example:
        >>> isinstance(machine_busy(), bool)
        True
    """
    global _load_cache
    now = time.monotonic()
    checked, load = _load_cache
    if now - checked > 1.0:
        try:
            load = os.getloadavg()[0]
        except OSError:  # not available on this platform
            load = 0.0
        _load_cache = (now, load)
    return load > usable_cores() - 1


def choose_threads(
    items: int, setting: int | None, *, images: bool = True, busy: bool | None = None, concurrent: int = 1
) -> int:
    """The thread count for one call over ``items`` images (or texts, ``images=False``).

    Args:
        items: the call's batch size.
        setting: a fixed count (returned as is), or None for the auto policy (module docstring).
        images: whether the items are images (texts need a batch four times larger to use threads).
        busy: whether the machine is busy; default: :func:`machine_busy`.
        concurrent: starter calls running now in this process, this one included.

    Example:
        >>> choose_threads(64, None, busy=False, concurrent=1) >= 1
        True
        >>> choose_threads(64, None, busy=False, concurrent=2)
        1
    """
    if setting is not None:
        return setting
    env = _env_threads()
    if env is not None:
        return env
    big = items >= (BIG_BATCH if images else BIG_BATCH * 4)
    if not big or concurrent > 1:
        return 1
    if busy if busy is not None else machine_busy():
        return 1
    return max(1, min(MAX_AUTO_THREADS, usable_cores()))


@contextmanager
def model_threads(items: int, setting: int | None, *, images: bool = True) -> Iterator[int]:
    """Run a model call with :func:`choose_threads` threads (this thread only), then restore the count.

    Example:
        >>> with model_threads(1, setting=1) as n:  # doctest: +SKIP
        ...     n
        1
    """
    global _in_flight
    torch = sys.modules.get("torch")  # loaded by the model; a numpy text call has no torch count to set
    if torch is None:
        yield choose_threads(items, setting, images=images, concurrent=_in_flight + 1)
        return
    with _in_flight_lock:
        _in_flight += 1
        concurrent = _in_flight
    try:
        before = torch.get_num_threads()
        fixed = setting if setting is not None else _env_threads()
        count = choose_threads(items, fixed, images=images, concurrent=concurrent)
        if fixed is None:
            count = min(count, before)  # auto only ever lowers what torch was told
        if count != before:
            torch.set_num_threads(count)
        try:
            yield count
        finally:
            if count != before:
                torch.set_num_threads(before)
    finally:
        with _in_flight_lock:
            _in_flight -= 1
