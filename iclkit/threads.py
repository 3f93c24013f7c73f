"""How many CPU threads torch uses: one, unless the user says otherwise.

The models here are small (matrices of tens to a few thousand rows), so a second torch thread
buys little on an idle machine and costs much on a busy one, where torch's threads wait on
each other for cores other jobs hold. `python benchmarks/threads.py` measures both.

Override, in order of precedence:
- `ICLKIT_NUM_THREADS=k` in the environment: iclkit sets torch to k threads;
- `OMP_NUM_THREADS` or `MKL_NUM_THREADS` in the environment: iclkit leaves torch as they set it;
- `torch.set_num_threads(k)` after `import iclkit`: the last call wins (one made before
  `import iclkit` is overridden by it).

The setting is torch's, for the whole process: other torch models in the same process get it.
"""

from __future__ import annotations

import os
import warnings

import torch

ENV_VARIABLE = "ICLKIT_NUM_THREADS"
DEFAULT_THREADS = 1
_TORCH_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def requested_threads(environ: os._Environ[str] | dict[str, str] = os.environ) -> int | None:
    """The thread count iclkit should set, or None to leave torch's own choice in place."""
    value = environ.get(ENV_VARIABLE)
    if value is not None:
        threads = int(value) if value.strip().isdigit() else 0
        if threads < 1:  # a warning, not an error: it is read as iclkit is imported, before any command runs
            warnings.warn(f"{ENV_VARIABLE}={value!r} is not a whole number of threads >= 1; iclkit uses "
                          f"{DEFAULT_THREADS}", stacklevel=3)
            return DEFAULT_THREADS
        return threads
    if any(name in environ for name in _TORCH_ENV):
        return None
    return DEFAULT_THREADS


def apply_thread_policy() -> None:
    """Set torch's intra-op thread count as `requested_threads` says."""
    threads = requested_threads()
    if threads is not None:
        torch.set_num_threads(threads)
