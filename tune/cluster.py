"""Where work runs on a Ray cluster.

:func:`node_label` names the node of the calling Ray worker: the name given by a custom
resource ``singr_node_<name>`` on that node (``scripts/cluster.sh`` gives every node one),
else the node's IP and the start of its id.
"""
from __future__ import annotations

NODE_RESOURCE_PREFIX = "singr_node_"


def node_label() -> str:
    """A readable name for the node this Ray worker runs on."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    try:
        for n in ray.nodes():
            if n.get("NodeID") == node_id:
                names = [k[len(NODE_RESOURCE_PREFIX):] for k in (n.get("Resources") or {})
                         if k.startswith(NODE_RESOURCE_PREFIX)]
                if names:
                    return names[0]
                return f"{n.get('NodeManagerAddress', '?')}/{node_id[:8]}"
    except Exception:  # noqa: BLE001 - the state lookup is best effort; the id still names the node
        pass
    return node_id[:8]
