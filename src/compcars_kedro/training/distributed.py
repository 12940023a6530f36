"""Multi-process training of ONE run with DistributedDataParallel (``training.ddp``).

:func:`fit_distributed` (called by :func:`~compcars_kedro.training.fit.fit` when
``training.ddp.world_size > 1``) starts ``world_size`` local processes with
``torch.multiprocessing.spawn`` (so ``kedro run`` itself runs once), backend ``nccl`` on CUDA
(rank r on ``cuda:r``; choose the GPUs with ``CUDA_VISIBLE_DEVICES``) or ``gloo`` on CPU.

* Rendezvous: the parent hosts a ``TCPStore`` on a socket it bound to ``127.0.0.1`` with a
  free port (nothing listens beyond localhost); gloo / NCCL bootstrap sockets use the loopback
  interface (``GLOO_SOCKET_IFNAME`` / ``NCCL_SOCKET_IFNAME`` when unset).
* Data: every rank computes the same global batches (seeded per ``(seed, epoch)``) and trains
  its contiguous ``1/N`` share of each; augmentation draws the global batch's random numbers
  and uses the share's rows, so the global batch, its order and its augmentation are those of a
  single-process run.
* Losses: pair losses (contrastive, ntxent, triplet, multisimilarity) go through
  pytorch-metric-learning's ``DistributedLossWrapper`` / ``DistributedMinerWrapper`` (every
  rank's embeddings are gathered: the loss sees the global batch), the ``clip`` loss gathers
  image and text embeddings the same way; per-sample losses (``ce``, ``arcface``) need no
  gathering (DDP's gradient average over equal shards is the global mean).
* BatchNorm: SyncBatchNorm on CUDA (``training.ddp.sync_batchnorm``). On CPU / gloo BatchNorm
  keeps per-rank batch statistics (each over ``batch_size / N`` samples), and DDP broadcasts
  rank 0's running statistics every step, so BatchNorm models (ResNets) differ slightly from a
  single-process run; LayerNorm models (ViT, CLIP) do not.
* Rank 0 alone validates, decides early stopping (broadcast to the others), writes
  ``best/`` / ``last/`` (and ``baseline/``) in ``work_dir`` and logs; the parent reads them back.
  ``resume=True`` works as in one process: every rank loads ``work_dir/last``.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist

from compcars_kedro.names import BASELINE

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainingConfig
from .data import ViewData
from .dist_context import DistContext
from .inference import model_from_checkpoint
from .loop import FitResult, fit_rank, fit_result
from .losses import LossConfig
from .models import ModelConfig
from .state import TrainState

logger = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"


def resolve_backend(backend: str, cuda: bool) -> str:
    """``auto`` -> ``nccl`` on CUDA, ``gloo`` on CPU; ``nccl`` on CPU is an error."""
    if backend == "auto":
        return "nccl" if cuda else "gloo"
    if backend == "nccl" and not cuda:
        raise ValueError("training.ddp.backend='nccl' needs CUDA; use 'gloo' (or 'auto') on CPU")
    return backend


def loopback_interface() -> str | None:
    """Name of the loopback network interface (``lo`` on Linux), if one is found."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    return next((n for n in names if n == "lo" or n.startswith("lo")), None)


@contextmanager
def loopback_store(timeout: datetime.timedelta) -> Iterator[int]:
    """Host the rendezvous ``TCPStore`` on ``127.0.0.1`` (a free port); yields the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOCALHOST, 0))
    sock.listen(128)
    port = int(sock.getsockname()[1])
    fd = sock.detach()  # the store owns (and closes) the listening socket
    try:
        store = torch_dist.TCPStore(
            LOCALHOST,
            port,
            None,
            True,
            timeout=timeout,
            wait_for_workers=False,
            master_listen_fd=fd,
        )
    except TypeError:  # a torch without master_listen_fd: let the store bind the port itself
        os.close(fd)
        logger.warning("this torch cannot host the store on a bound socket; port %d", port)
        store = torch_dist.TCPStore(LOCALHOST, port, None, True, timeout=timeout,
                                    wait_for_workers=False)
    try:
        yield port
    finally:
        del store


def fit_distributed(
    model_cfg: ModelConfig,
    loss_cfg: LossConfig,
    train_cfg: TrainingConfig,
    train: ViewData,
    val: ViewData | None,
    *,
    device: str | torch.device,
    work_dir: Path | str | None = None,
    **kwargs: Any,
) -> FitResult:
    """:func:`~compcars_kedro.training.fit.fit` over ``training.ddp.world_size`` processes."""
    ddp = train_cfg.ddp
    world = ddp.world_size
    cuda = torch.device(device).type == "cuda"
    backend = resolve_backend(ddp.backend, cuda)
    if cuda and torch.cuda.device_count() < world:
        raise ValueError(
            f"training.ddp.world_size={world} exceeds the {torch.cuda.device_count()} visible "
            "CUDA devices"
        )
    logger.info(
        "DDP: world_size=%d backend=%s device=%s, %d samples per rank per step (global batch %d)",
        world,
        backend,
        f"cuda:0..{world - 1}" if cuda else "cpu",
        train_cfg.batch_size // world,
        train_cfg.batch_size,
    )
    with tempfile.TemporaryDirectory(prefix="compcars-ddp-") as tmp:
        work = Path(work_dir) if work_dir is not None else Path(tmp)
        kwargs = {**kwargs, "work_dir": str(work)}  # fit's other keyword arguments
        payload = (model_cfg, loss_cfg, train_cfg, train, val, kwargs)
        timeout = datetime.timedelta(seconds=ddp.timeout_s)
        with loopback_store(timeout) as port:
            logger.info("DDP rendezvous on tcp://%s:%d (localhost only)", LOCALHOST, port)
            torch.multiprocessing.spawn(
                _worker, args=(world, backend, cuda, port, timeout, payload), nprocs=world,
                join=True,
            )
        best, last = load_checkpoint(work / "best"), load_checkpoint(work / "last")
        baseline = load_checkpoint(work / BASELINE)
    model = model_from_checkpoint(best, device=device)
    history = TrainState.from_dict(last.meta).history
    return fit_result(model, None, best, last, history, baseline)


def _worker(
    rank: int,
    world: int,
    backend: str,
    cuda: bool,
    port: int,
    timeout: datetime.timedelta,
    payload: tuple[Any, ...],
) -> None:
    """One rank: join the group, train with :func:`~compcars_kedro.training.loop.fit_rank`."""
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}/{world}] %(levelname)s %(name)s: %(message)s",
        force=True,  # a fresh process: its own handler, ranks > 0 warnings only
    )
    logger.setLevel(logging.INFO)  # every rank states that it joined
    lo = loopback_interface()
    if lo is not None:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", lo)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", lo)
    if cuda:
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    store = torch_dist.TCPStore(LOCALHOST, port, None, False, timeout=timeout)
    torch_dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                                  timeout=timeout)
    try:
        ctx = DistContext(rank, world, backend, device)
        logger.info("DDP process group: world_size=%d backend=%s rank %d on %s", world,
                    backend, rank, device)
        model_cfg, loss_cfg, train_cfg, train, val, kwargs = payload
        result = fit_rank(model_cfg, loss_cfg, train_cfg, train, val, device=device, dist=ctx,
                          **kwargs)
        if result is not None and result.baseline is not None:
            save_checkpoint(result.baseline, Path(kwargs["work_dir"]) / BASELINE)
        torch_dist.barrier()
    finally:
        torch_dist.destroy_process_group()
