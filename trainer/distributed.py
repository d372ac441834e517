"""torch.distributed for linreg-train: the process group under ``torchrun`` (or ``--nproc``),
the few collectives the streamed fit needs, and ``--nproc N`` itself.

    torchrun --nproc-per-node 2 -m trainer.cli_entry DATA ...   # or: linreg-train DATA --nproc 2
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        $(which linreg-train) DATA ...

Each process reads the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) and joins one group: gloo on the CPU, nccl on CUDA.
``--nproc N`` starts N local processes through torch's own launcher API
(``torch.distributed.launcher.api.elastic_launch``), the one torchrun uses; a process that
fails (a bad cell, out of memory, killed) makes the launcher stop every other one, and the run
ends with one line naming the rank and its cause.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.config import LOST_RANK, TrainingError

TIMEOUT = _dt.timedelta(minutes=30)  # a collective waits this long for a slow rank


@dataclass
class Group:
    """This process's place in the run: ``rank`` of ``world`` (1: no process group)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def gather(self, array: np.ndarray) -> list[np.ndarray]:
        """Every rank's ``array`` (any shape), in rank order, on every rank."""
        if not self.distributed:
            return [array]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, np.asarray(array))
        return out

    def gather_object(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def sum(self, array: np.ndarray) -> np.ndarray:
        """The element-wise sum of every rank's float64 ``array``, summed in rank order (so
        every rank gets the same bits whatever the backend's reduction order)."""
        if not self.distributed:
            return np.asarray(array, dtype=np.float64)
        return np.sum(np.stack(self.gather(np.asarray(array, dtype=np.float64))), axis=0)

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def under_torchrun() -> bool:
    """Whether this process was started by torchrun / ``--nproc`` with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device: torch.device) -> Group:
    """Join the process group torchrun's environment describes (or none, alone)."""
    if not under_torchrun():
        return Group(device=device)
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        local_world, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", world)), \
            torch.cuda.device_count()
        if local_world > gpus:  # nccl cannot share one GPU between ranks
            raise TrainingError(f"rank {rank}: {local_world} processes on this machine but "
                                f"{gpus} CUDA device(s); nccl needs one GPU per process: use "
                                f"--nproc {gpus} or --device cpu")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
        # The processes of one machine share its cores: as many threads each as is fair.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    try:
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=TIMEOUT,
                                **({"device_id": device} if backend == "nccl" else {}))
    except Exception as e:  # torch raises several types for an unreachable master
        raise TrainingError(f"rank {rank}: cannot join the process group ({backend}, "
                            f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}):"
                            f" {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return Group(rank, world, local_rank, backend, device)


# ------------------------------------------------------------------ --nproc N

def launch(nproc: int, argv: list[str], entry: Callable[[list[str]], None]) -> None:
    """Run ``entry(argv)`` (linreg-train's command) in ``nproc`` local processes, through
    torch's launcher; ``entry`` is a module-level function, sent to the processes by name.

    Rank 0's standard output is shown (its log lines); every process's standard error goes to
    a log file, and a failed run ends with one TrainingError naming the first rank that failed
    and what it said (its last error line), or the signal that killed it."""
    import logging

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in ("torch.distributed", "torch.multiprocessing"):  # the one line below says it
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="linreg-nproc-") as logs:
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc,
                              run_id=f"linreg-{uuid.uuid4().hex[:8]}", rdzv_backend="c10d",
                              rdzv_endpoint=f"127.0.0.1:{_free_port()}", rdzv_configs={},
                              max_restarts=0, monitor_interval=0.1, start_method="spawn",
                              logs_specs=DefaultLogsSpecs(log_dir=logs, redirects=Std.ALL))
        done = threading.Event()
        follower = threading.Thread(target=_follow, args=(Path(logs), done), daemon=True)
        follower.start()
        try:
            with _threads_per_rank(nproc):
                elastic_launch(config, _worker)(entry, argv, os.getpid())
        except ChildFailedError as e:
            rank, cause = _root_cause(e, nproc, Path(logs))
            raise TrainingError(f"rank {rank} of {nproc} failed: {cause}") from None
        except SignalException as e:  # Ctrl-C or SIGTERM: the launcher stopped the ranks
            import signal

            from serve.core.commands import Terminated

            raise (KeyboardInterrupt() if e.sigval == signal.SIGINT else
                   Terminated(int(e.sigval))) from None
        finally:
            done.set()
            follower.join()


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _threads_per_rank(nproc: int) -> Iterator[None]:
    """The ranks share this machine's cores: each one's math libraries (torch's OpenMP,
    numpy's BLAS, set before they load in the spawned process) get ``cores // nproc`` threads,
    as torchrun does, unless the user set them."""
    from serve.core.formats import usable_cores

    threads = str(max(1, usable_cores() // nproc))
    unset = [name for name in THREAD_VARIABLES if name not in os.environ]
    os.environ.update({name: threads for name in unset})
    try:
        yield
    finally:
        for name in unset:
            os.environ.pop(name, None)


def _follow(logs: Path, done: threading.Event) -> None:
    """Copy rank 0's standard output (its log lines, its summary) to ours as it is written."""
    path = None
    while path is None:
        found = sorted(logs.rglob("0/stdout.log"))
        if found:
            path = found[0]
        elif done.wait(0.05):
            return
    with open(path, errors="replace") as f:
        while True:
            line = f.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            elif done.wait(0.05):
                sys.stdout.write(f.read())
                sys.stdout.flush()
                return


def _root_cause(error: Any, nproc: int, logs: Path) -> tuple[int, str]:
    """The rank that failed first and why. The launcher reports one failed process, often a
    survivor whose collective broke when the culprit left; so every rank's last error line is
    read, and a rank's own error (or a kill) wins over what the others said because of it:
    "another rank left the run", or "stopped by SIGTERM" (the launcher stopping survivors)."""
    said = {r: _error_line(logs, r) for r in range(nproc)}
    rank, failure = error.get_first_failure()
    for r, f in {**getattr(error, "failures", {}), rank: failure}.items():
        if said.get(r) is None and f.exitcode is not None and f.exitcode < 0:
            said[r] = f"killed by {_signal_name(-f.exitcode)}"
    own = [r for r, text in said.items() if text and LOST_RANK not in text
           and not text.startswith(("stopped by SIG", "interrupted"))]
    if own:
        return own[0], said[own[0]]
    silent = [r for r, text in said.items() if text is None]
    if silent:  # killed without a word (SIGKILL, the OOM killer)
        return silent[0], "ended without an error (killed, or out of memory)"
    return rank, said[rank] or f"exit status {failure.exitcode}"


def _error_line(logs: Path, rank: int) -> str | None:
    """Rank ``rank``'s one-line error (``linreg-train: error: rank N: ...``), if it wrote one."""
    for path in logs.rglob(f"attempt_*/{rank}/stderr.log"):
        for line in reversed(path.read_text(errors="replace").splitlines()):
            if line.startswith("linreg-train: error: "):
                return line.removeprefix("linreg-train: error: ").removeprefix(f"rank {rank}: ")
    return None


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _worker(entry: Callable[[list[str]], None], argv: list[str], launcher: int) -> None:
    """One process of ``--nproc``: ``entry(argv)``, under the launcher's environment. It dies
    with the launcher (``launcher`` is its pid): no rank outlives a killed run."""
    _die_with(launcher)
    try:
        entry(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    except BaseException:  # (the command turns everything into SystemExit; a net)
        code = 1
    if not code:
        sys.exit(0)
    # A failed rank has said its one line (in its log, which the launcher reads). Its process
    # group may be broken (a peer died): torn down at interpreter exit, gloo's threads can
    # still be joinable and abort the process ("terminate called without an active
    # exception"). Everything of ours has unwound by now: end here, without that teardown.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        if PEER_LOST.is_set():  # let the launcher see the peer's own end first: the root cause
            time.sleep(2)
    except BaseException:  # the launcher's SIGTERM: we are ending anyway
        pass
    os._exit(code)


PEER_LOST = threading.Event()  # set when this rank's collective failed because a peer left


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when ``parent`` (the launcher) ends, however it ends
    (SIGKILL included, which no handler sees). Linux only; elsewhere the launcher's own
    shutdown stops its workers."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the launcher died before the line above took effect
        os._exit(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
