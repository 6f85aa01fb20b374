"""``doctor --engine ray`` on a running cluster: its nodes, whether a node can host the filter
actor and the CPU tasks with the resources the config asks for, and whether every node reaches the
work files (the output folder, or ``ray.shared_storage``) by writing and reading a probe there from
a task pinned to that node."""

from __future__ import annotations

import uuid
from typing import Any

from ..config import MinerConfig
from .doctor import FAIL, OK, WARN, Check

#: Seconds a probe task may take on a node before that node counts as not reaching the storage.
PROBE_TIMEOUT_S = 60.0


def _fits(node: dict[str, Any], wants: dict[str, float]) -> bool:
    have = node.get("Resources") or {}
    return all(float(have.get(name, 0.0)) >= amount for name, amount in wants.items() if amount > 0)


def _probe(target: str, shared: bool, name: str) -> str:
    """Write, read back and remove a probe file under ``target`` (a path, or an fsspec URL)."""
    payload = name.encode()
    if shared:
        from ..download.remote import open_filesystem

        fs, root = open_filesystem(target)
        path = f"{root.rstrip('/')}/.video-miner-doctor/{name}"
        fs.pipe_file(path, payload)
        try:
            if fs.cat_file(path) != payload:
                raise OSError(f"{path} reads back other bytes")
        finally:
            fs.rm_file(path)
        return path
    from pathlib import Path

    from ..store.files import make_dirs, read_bytes, write_bytes

    output = Path(target)
    # The store's own writes: no link followed inside the output folder, the probe under a temp name first.
    probe = make_dirs(output / ".video-miner-doctor", output) / name
    write_bytes(probe, payload, output)
    try:
        if read_bytes(probe, len(payload) + 1) != payload:
            raise OSError(f"{probe} reads back other bytes")
    finally:
        probe.unlink(missing_ok=True)
    return str(probe)


def _node_line(node: dict[str, Any]) -> str:
    resources = sorted((node.get("Resources") or {}).items())
    return f"{node.get('NodeManagerAddress')} " + ", ".join(
        f"{k} {v:g}" for k, v in resources if not k.startswith(("node:", "memory", "object_store")))


def _placement(config: MinerConfig, nodes: list[dict[str, Any]]) -> list[Check]:
    """Whether some node has what the filter actor and the CPU tasks ask for."""
    r = config.ray
    gpus = r.filter_gpus if r.filter_gpus is not None else (
        1.0 if any(float((n.get("Resources") or {}).get("GPU", 0)) >= 1 for n in nodes) else 0.0)
    filter_wants = {"CPU": r.filter_cpus, "GPU": gpus, **r.filter_resources}
    task_wants = {"CPU": r.cpus_per_task, **r.cpu_resources}
    checks = []
    for what, wants, key in (("filter actor", filter_wants, "ray.filter_cpus, ray.filter_gpus, ray.filter_resources"),
                             ("download/extract tasks", task_wants, "ray.cpus_per_task, ray.cpu_resources")):
        hosts = [n for n in nodes if _fits(n, wants)]
        asked = ", ".join(f"{k} {v:g}" for k, v in wants.items() if v > 0)
        checks.append(Check(what, OK if hosts else FAIL, f"{len(hosts)} of {len(nodes)} nodes have {asked}",
                            "" if hosts else f"no node has that: lower {key}, or add a node with those resources"))
    return checks


def _storage(config: MinerConfig, nodes: list[dict[str, Any]]) -> Check:
    """Whether a probe task pinned to each node writes and reads the work files' place."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    shared = bool(config.ray.shared_storage)
    target = config.ray.shared_storage or str(config.output_dir.resolve())
    probe = ray.remote(_probe)
    refs = {n["NodeID"]: probe.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(target, shared, f"{n['NodeID'][:12]}-{uuid.uuid4().hex[:8]}") for n in nodes}
    failed = []
    for node_id, ref in refs.items():
        try:
            ray.get(ref, timeout=PROBE_TIMEOUT_S)
        except Exception as exc:  # a task's error comes back wrapped; whatever it is, the node failed
            failed.append(f"{node_id[:12]}: {type(exc).__name__}: {str(exc).splitlines()[-1][:200] if str(exc) else ''}")
    what = "shared storage" if shared else "output folder"
    if failed:
        fix = ("check the URL and each node's credentials" if shared else
               "mount the output folder at the same path on every node, or give --shared-storage URL")
        return Check(f"{what} from every node", FAIL, f"{target}: {len(failed)} of {len(nodes)} nodes cannot "
                     f"write and read it ({'; '.join(failed[:3])})", fix)
    return Check(f"{what} from every node", OK if nodes else WARN, f"{target}: written and read back from {len(nodes)} nodes")


def check_nodes(config: MinerConfig) -> list[Check]:
    """The checks of a cluster this process is connected to (``ray.init`` done)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    checks = [Check("cluster nodes", OK if nodes else FAIL, f"{len(nodes)} alive: " + "; ".join(map(_node_line, nodes)),
                    "" if nodes else "start the cluster (ray start --head) or fix --ray-address")]
    return checks + _placement(config, nodes) + [_storage(config, nodes)]
