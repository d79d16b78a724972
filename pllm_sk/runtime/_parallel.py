"""What the library knows about the joblib engines it runs on: loky, Dask and Ray.

scikit-learn parallelises through joblib; :func:`joblib_backend` opens the
``with`` block of an engine, :func:`serialized_size` measures what its serializer
sends per task, :func:`claim_gpu` gives each worker process its own device. Large
data goes to the workers the way the user chose (a shared corpus travels as a
reference: :meth:`pllm_sk.datasets.Corpus.share`); nothing here inspects who is
pickling, and nothing here starts or schedules anything by itself.
"""

import os
import tempfile
from contextlib import contextmanager

from joblib import parallel_backend

__all__ = [
    "BACKENDS",
    "claim_gpu",
    "claim_slot",
    "joblib_backend",
    "serialized_size",
]

# The joblib backends that the benchmarks' --backend option offers.
BACKENDS = ("loky", "dask", "ray")


def serialized_size(engine, obj):
    """Bytes that ``engine``'s task serializer makes of ``obj``: what a worker receives.

    ``"dask"`` needs a ``distributed.Client`` and ``"ray"`` a connected Ray.
    """
    if engine == "loky":
        from joblib.externals.loky.backend.reduction import dumps

        return len(dumps(obj))
    if engine == "dask":
        from distributed.protocol import serialize_bytes

        return len(serialize_bytes(obj))
    import ray

    context = ray._private.worker.global_worker.get_serialization_context()
    return context.serialize(obj).total_bytes


def claim_gpu():
    """The CUDA device of this worker process, as a string such as ``"cuda:1"``.

    A Dask or Ray worker given one GPU by its engine (``CUDA_VISIBLE_DEVICES``,
    as ``dask_cuda.LocalCUDACluster`` and ``ray_remote_args={"num_gpus": 1}``
    set) sees one device and uses it. A process that sees several (loky's
    workers on a machine with several GPUs) takes the first that no other
    process holds, by a lock file it keeps for its lifetime; when all are held,
    the one its process id picks.
    """
    import torch

    n_gpus = torch.cuda.device_count()
    if n_gpus <= 1:
        return "cuda"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all").replace(",", "-")
    folder = os.path.join(tempfile.gettempdir(), f"pllm_sk-gpus-{visible}")
    return f"cuda:{claim_slot(n_gpus, folder)}"


_held_slots = {}


def claim_slot(n_slots, folder):
    """The first of ``n_slots`` slots that no live process holds; held from now on.

    A slot is held through an exclusive lock on ``<folder>/<slot>.lock``, which
    the operating system releases when the process ends (however it ends).
    This process keeps its first claim. Without ``fcntl`` (Windows), or when
    every slot is held, the slot is the process id modulo ``n_slots``.
    """
    if folder in _held_slots:
        return _held_slots[folder][0]
    try:
        import fcntl
    except ImportError:
        return os.getpid() % n_slots
    os.makedirs(folder, exist_ok=True)
    for slot in range(n_slots):
        handle = open(os.path.join(folder, f"{slot}.lock"), "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _held_slots[folder] = (slot, handle)
        return slot
    return os.getpid() % n_slots


@contextmanager
def joblib_backend(name, *, address=None, n_workers=None):
    """``joblib.parallel_backend(name)`` on the engine's own workers; yields a label.

    What the benchmarks' ``--backend`` and ``--scheduler`` options do, and the
    ``with`` blocks of the README's "More than one machine":

    - ``None``: no block (scikit-learn's default: ``n_jobs=None`` runs in this
      process);
    - ``"loky"``: ``n_workers`` processes of this machine (``None``: all cores);
    - ``"dask"``: a ``distributed.Client`` connected to the scheduler at
      ``address``, or to a ``LocalCluster`` of ``n_workers`` (default 2)
      single-threaded processes started here and closed at the end;
    - ``"ray"``: the Ray cluster at ``address`` (or the one this process is
      connected to), or a local Ray with ``n_workers`` (default 2) CPUs, shut
      down at the end if it was started here.
    """
    if name is None:
        yield "none (sequential, in this process)"
    elif name == "loky":
        with parallel_backend("loky", n_jobs=n_workers or -1):
            yield f"loky ({n_workers or os.cpu_count()} processes)"
    elif name == "dask":
        from distributed import Client, LocalCluster

        cluster = None
        if address is None:
            cluster = LocalCluster(
                n_workers=n_workers or 2,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
        client = Client(address or cluster)
        try:
            n_cores = sum(client.ncores().values())
            with parallel_backend("dask", client=client):
                yield f"dask ({client.scheduler.address}, {n_cores} worker threads)"
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    elif name == "ray":
        import ray
        from ray.util.joblib import register_ray

        started = not ray.is_initialized()
        if started:
            ray.init(
                address=address,
                num_cpus=None if address else n_workers or 2,
                include_dashboard=False,
                log_to_driver=False,
            )
        register_ray()
        try:
            with parallel_backend("ray"):
                n_cpus = int(ray.cluster_resources().get("CPU", 0))
                yield f"ray ({address or 'local'}, {n_cpus} CPUs)"
        finally:
            if started:
                ray.shutdown()
    else:
        raise ValueError(f"backend must be None or one of {BACKENDS}; got {name!r}.")
