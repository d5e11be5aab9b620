"""Ray backend for the simulations (`fedrollup experiment --backend ray`): each round's
local training runs as one Ray task per participant on a private, loopback-only Ray
instance; the driver keeps everything else (the rollup's round decision, evaluation).

A task is ``node.participant.fl``'s pure ``Behaviour.submit(RoundContext)``: seeded per
participant and round, single-threaded torch with deterministic kernels, so the CSVs are bit
for bit those of the in-process backend. ``ray`` is imported only here, from the ``ray``
extra; without it ``MissingRay`` says how to install it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from types import ModuleType, TracebackType

from node.participant import fl

RAY_HINT = "pip install 'fedrollup[ray]'"
# Tasks carry one client's shard and the global model (kilobytes); Ray would otherwise
# reserve 30 % of the machine's memory for its shared object store.
OBJECT_STORE_BYTES = 256 * 2**20


class MissingRay(RuntimeError):
    """The optional ``ray`` extra is not installed."""


# Set before Ray is imported (it reads them then, and its processes inherit them):
LOOPBACK_ONLY = {
    # no usage statistics sent to Ray's servers: nothing leaves this machine
    "RAY_USAGE_STATS_ENABLED": "0",
    # a single-machine instance: Ray then resolves its node address to 127.0.0.1 instead
    # of the machine's network address (it otherwise rewrites 127.0.0.1 into that one)
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def import_ray() -> ModuleType:
    os.environ.update(LOOPBACK_ONLY)
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise MissingRay(f"the Ray backend needs ray: {RAY_HINT}") from exc


def _submit(agent: fl.Behaviour, ctx: fl.RoundContext) -> fl.Float32Array:
    # One thread per worker: Ray gives each task one CPU (the training itself also pins
    # torch to one thread inside fl._seeded_torch, so results never depend on this).
    import torch

    torch.set_num_threads(1)
    return agent.submit(ctx)


class RayTasks:
    """A ``fl.TaskRunner`` on a new local Ray instance with ``workers`` CPUs (127.0.0.1, no
    dashboard, never an existing cluster). Use as a context manager: it shuts Ray down."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("the Ray backend needs at least one worker")
        self._ray = import_ray()
        self._ray.init(
            address="local",
            num_cpus=workers,
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
        self._remote = self._ray.remote(num_cpus=1)(_submit)

    def __call__(self, tasks: Sequence[fl.SubmitTask]) -> list[fl.Float32Array]:
        refs = [self._remote.remote(agent, ctx) for agent, ctx in tasks]
        return list(self._ray.get(refs))

    def close(self) -> None:
        self._ray.shutdown()

    def __enter__(self) -> RayTasks:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
