"""What the library knows about the joblib engines it runs on: loky, Dask and Ray.

scikit-learn parallelises through joblib, and joblib ships each task to a worker
with the engine's own serializer. This module is the one place that recognises
those serializers (:func:`shipping_engine`) and says whether the engine's workers
share this machine's disk (:func:`workers_share_disk`), so that a large immutable
object (a :class:`~pllm_sk.datasets.Corpus`) can travel as a small reference that
each worker resolves once. Nothing here starts or schedules anything.
"""

import ipaddress
import os
import socket
import sys
import tempfile
import time
from contextlib import contextmanager

from joblib import parallel_backend

__all__ = [
    "BACKENDS",
    "REFERENCE_ENV",
    "claim_gpu",
    "joblib_backend",
    "reference_mode",
    "serialized_size",
    "shipping_engine",
    "workers_share_disk",
]

# The joblib backends that the benchmarks' --backend option offers.
BACKENDS = ("loky", "dask", "ray")
# "auto" (the default), "always" or "never": when a corpus travels by reference.
REFERENCE_ENV = "PLLM_SK_CORPUS_REFERENCE"
_MODES = ("auto", "always", "never")

# Modules whose frames on the stack mean "this pickle ships a task or a result
# between an engine's processes" (not a user's pickle.dumps or joblib.dump).
_ENGINE_MODULES = (
    ("loky", "joblib.externals.loky.backend.reduction"),
    ("loky", "loky.backend.reduction"),
    ("dask", "distributed.protocol"),
    ("ray", "ray._private.serialization"),
)
# How long a Ray cluster's node list is trusted before it is asked again (seconds).
_NODES_TTL = 5.0
_ray_nodes_seen = [0.0, False]


def reference_mode():
    """``$PLLM_SK_CORPUS_REFERENCE``: ``"auto"`` (unset), ``"always"`` or ``"never"``."""
    mode = os.environ.get(REFERENCE_ENV, "auto").strip().lower() or "auto"
    if mode not in _MODES:
        raise ValueError(
            f"{REFERENCE_ENV}={mode!r}; use one of {list(_MODES)} (unset means 'auto')."
        )
    return mode


def shipping_engine():
    """The engine whose serializer is pickling right now: "loky", "dask", "ray" or None.

    Read from the calling frames: the pickling goes through
    ``loky.backend.reduction`` (loky's task and result queues),
    ``distributed.protocol`` (Dask's messages) or ``ray._private.serialization``
    (Ray's object store and task arguments). A user's ``pickle.dumps`` or
    ``joblib.dump``, even inside a worker's task, has none of them.
    """
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__") or ""
        for engine, prefix in _ENGINE_MODULES:
            if module.startswith(prefix):
                return engine
        frame = frame.f_back
    return None


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


def workers_share_disk(engine):
    """Whether the workers of ``engine`` can read the files this process writes.

    ``reference_mode() == "always"`` says yes for every engine (the cache folder
    is on a file system that every machine of the cluster mounts at the same
    path); ``"never"`` says no. ``"auto"``: loky's workers always do; Dask's when
    the scheduler of the current client is on this machine (a ``LocalCluster``,
    or an address of this host); Ray's when every node of the cluster is this
    machine.
    """
    mode = reference_mode()
    if mode != "auto" or engine is None:
        return mode == "always"
    if engine == "loky":
        return True
    if engine == "dask":
        return _dask_is_local()
    return _ray_is_local()


def _dask_is_local():
    try:
        from distributed import LocalCluster
        from distributed.client import default_client

        client = default_client()
    except (ImportError, ValueError):  # no client: the task cannot be Dask's
        return False
    if isinstance(getattr(client, "cluster", None), LocalCluster):
        return True
    address = getattr(client.scheduler, "address", "") or ""
    if address.startswith("inproc://"):
        return True
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return _is_this_host(host)


def _ray_is_local():
    now = time.monotonic()
    if now - _ray_nodes_seen[0] < _NODES_TTL:
        return _ray_nodes_seen[1]
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    here = ray.util.get_node_ip_address()
    addresses = [node.get("NodeManagerAddress", "") for node in nodes]
    local = bool(addresses) and all(
        address == here or _is_this_host(address) for address in addresses
    )
    _ray_nodes_seen[:] = [now, local]
    return local


def _is_this_host(host):
    if not host:
        return False
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        if host == "localhost":
            return True
    names = {socket.gethostname(), socket.getfqdn()}
    if host in names:
        return True
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        addresses = set()
    return host in addresses


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
