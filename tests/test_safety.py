"""What paretopress exposes: a local Ray instance listens on loopback only."""

import psutil

LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")


def test_local_ray_listens_on_loopback_only(ray_cluster):
    import ray

    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
    listening = [(name, conn.laddr) for name, conn in _child_sockets() if conn.status == psutil.CONN_LISTEN]
    assert listening  # gcs_server, raylet and workers do listen ...
    assert [(name, addr) for name, addr in listening if addr.ip not in LOOPBACK] == []  # ... on loopback only


def _child_sockets():
    """(process name, inet socket) of every live child; Ray starts and ends short-lived workers all the time, so a
    child listed a moment ago may be gone when its sockets are read (it then listens nowhere)."""
    for process in psutil.Process().children(recursive=True):
        try:
            name, connections = process.name(), process.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        yield from ((name, conn) for conn in connections)
