"""Small helpers shared by CLI commands."""

import socket


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_command(data_dir: str, port: int, *extra: str) -> list[str]:
    """The command line of a node process (benchmarks, the demo and the tests start one)."""
    import sys

    return [
        sys.executable,
        "-m",
        "node.ops.cli",
        "run",
        "--data-dir",
        data_dir,
        "--port",
        str(port),
        *extra,
    ]
