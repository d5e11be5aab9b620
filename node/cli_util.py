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


def tune_garbage_collector() -> None:
    """For a node process: what is loaded at start-up (modules, genesis) is moved out of the
    collector's sight, and collections run less often. The cyclic collector stops every
    thread while it scans: with tens of thousands of actions pending, the default
    thresholds ran full collections every few blocks, each a pause for reads and writes."""
    import gc

    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)


# generation 0 after this many net allocations; 1 and 2 after this many younger collections
_GC_THRESHOLDS = (50_000, 20, 100)
