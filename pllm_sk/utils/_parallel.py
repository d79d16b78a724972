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
import time

__all__ = ["REFERENCE_ENV", "reference_mode", "shipping_engine", "workers_share_disk"]

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
