"""Process roles when a run is started with several processes (accelerate launch, torchrun).

The launchers set ``WORLD_SIZE`` and ``RANK`` for every process. With a world size of 1, or
without these variables, no function here creates a process group. The process is then the
main one, and a barrier returns at once. With a larger world size the first call that
communicates creates the process group through accelerate's ``PartialState`` (gloo on CPU,
NCCL on GPUs), and the TRL trainers later reuse it.

Process 0 is the main process. It alone writes the run's shared files, and the other
processes wait for it at a barrier.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from drirl.errors import DrirlError

logger = logging.getLogger(__name__)

T = TypeVar("T")

TIMEOUT_ENV = "DRIRL_DISTRIBUTED_TIMEOUT"
# The other processes wait at a barrier while the main process runs a whole stage alone
# (reward training, evaluation), which can take hours on a large model. torch's default
# timeout in torch 2.14 (10 minutes for NCCL, 30 for gloo) would end the run, so the group
# gets a long one.
DEFAULT_TIMEOUT_SECONDS = 24 * 3600


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise DrirlError(
            f"environment variable {name} is {text!r}; expected an integer set by the "
            "launcher (accelerate launch or torchrun)"
        ) from None


def _group_initialized() -> bool:
    import torch.distributed

    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    """Return the number of processes in the run (1 without a launcher)."""
    if _group_initialized():
        import torch.distributed

        return torch.distributed.get_world_size()
    return max(_env_int("WORLD_SIZE", 1), 1)


def process_index() -> int:
    """Return this process's rank in the run (0 without a launcher)."""
    if _group_initialized():
        import torch.distributed

        return torch.distributed.get_rank()
    return _env_int("RANK", 0)


def is_main_process() -> bool:
    """Return whether this process is process 0, which writes the run's shared files."""
    return process_index() == 0


def is_distributed() -> bool:
    """Return whether the run has more than one process."""
    return world_size() > 1


def timeout() -> timedelta:
    """Return the process group timeout: ``$DRIRL_DISTRIBUTED_TIMEOUT`` seconds, or 24 h."""
    seconds = _env_int(TIMEOUT_ENV, DEFAULT_TIMEOUT_SECONDS)
    if seconds < 1:
        raise DrirlError(
            f"environment variable {TIMEOUT_ENV} is {seconds}; set it to a number of "
            "seconds of at least 1"
        )
    return timedelta(seconds=seconds)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _state_arguments() -> dict[str, Any]:
    """Return the ``PartialState`` arguments for this machine and launcher."""
    import torch

    if _env_flag("ACCELERATE_USE_CPU") or not torch.cuda.is_available():
        return {"cpu": True}
    if _env_flag("ACCELERATE_USE_DEEPSPEED"):
        # DeepSpeed creates the group itself with its own backend name (NCCL).
        return {}
    # Trainers follow the device of the run (use_cpu), which may be the CPU on a machine
    # with GPUs. The group therefore has gloo for CPU tensors and NCCL for CUDA tensors.
    # NOTE: this branch was not run, because no GPU was available.
    return {"backend": "cuda:nccl,cpu:gloo"}


def ensure_process_group() -> None:
    """Create the process group when the run has several processes and none exists yet.

    accelerate's ``PartialState`` reads the launcher's variables and also selects each
    process's GPU. A single-process run creates nothing.
    """
    if world_size() <= 1 or _group_initialized():
        return
    from accelerate import PartialState

    state = PartialState(**_state_arguments(), timeout=timeout())
    logger.debug(
        "process %d of %d joined the process group (backend %s)",
        state.process_index,
        state.num_processes,
        state.backend,
    )


def barrier() -> None:
    """Wait until every process reaches this call; returns at once in a single process."""
    if world_size() <= 1:
        return
    import torch.distributed

    ensure_process_group()
    torch.distributed.barrier()


def broadcast_from_main(value: T) -> T:
    """Return the main process's ``value`` on every process (a picklable object).

    Every process must call it, and it waits for all of them like a barrier. In a single
    process it returns ``value`` unchanged.
    """
    if world_size() <= 1:
        return value
    import torch.distributed

    ensure_process_group()
    holder: list[Any] = [value if is_main_process() else None]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]


@contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block on the main process, then on the others.

    Use it for work that fills a cache: the main process writes it, and the others find
    it filled. Every process must enter the block.
    """
    if world_size() <= 1:
        yield
        return
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


@contextmanager
def shared_atomic_folder(path: Path) -> Iterator[Path]:
    """Yield one temporary folder to every process, renamed to ``path`` after the block.

    Every process must enter the block, for example to take part in a trainer's
    ``save_model``, which gathers sharded weights under DeepSpeed ZeRO-3 or FSDP. The main
    process creates the folder as ``<name>.tmp-<random>`` beside ``path`` and sends its
    name to the others. After every process has left the block, the main process replaces
    ``path`` with it, and the others wait until the rename is done. When the block raises
    on the main process, the main process removes the folder.

    NOTE: an exception on one process is not sent to the others. A process that stops
    waits at the next barrier, so the others wait too until the launcher ends them, as
    torch's elastic launcher does when one process exits with an error.
    """
    path = Path(path)
    main = is_main_process()
    tmp_name = None
    if main:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_name = tempfile.mkdtemp(prefix=f"{path.name}.tmp-", dir=path.parent)
    tmp = Path(broadcast_from_main(tmp_name))
    try:
        yield tmp
        barrier()
        if main:
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
    except BaseException:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    barrier()
