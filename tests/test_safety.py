"""What paretopress exposes: a local Ray instance listens on loopback only."""

import psutil

LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")


def test_local_ray_listens_on_loopback_only(ray_cluster):
    import ray

    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
    listening = [
        (process.name(), conn.laddr)
        for process in psutil.Process().children(recursive=True)
        for conn in process.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]
    assert listening  # gcs_server, raylet and workers do listen ...
    assert [(name, addr) for name, addr in listening if addr.ip not in LOOPBACK] == []  # ... on loopback only
