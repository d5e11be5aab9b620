"""Node configuration: defaults < TOML file < FEDROLLUP_* environment variables < CLI flags."""

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "FEDROLLUP_"


@dataclass(frozen=True)
class NodeConfig:
    data_dir: Path = Path(".fedrollup")
    host: str = "127.0.0.1"
    port: int = 8080
    genesis: Path | None = None  # None = the embedded dev genesis
    block_time_ms: int = 250
    block_max_actions: int = 5000
    block_max_bytes: int = 64 * 1024 * 1024  # a block of parameter submissions is cut sooner
    max_body_bytes: int = 32 * 1024 * 1024  # one HTTP body: a batch, or a model's parameters
    max_batch_actions: int = 10_000
    verify_threads: int = 2
    max_pending_actions: int = 200_000  # accepted-but-unexecuted bound: above it, 503
    # HTTP hardening: requests in handlers at once (above it, 503 "busy"); seconds a client
    # may take to send a body (then 408 and the connection closes); seconds an idle
    # connection, or one still sending its request headers, is kept open.
    max_concurrent_requests: int = 64  # x max_body_bytes bounds the memory bodies can take
    body_timeout_s: int = 10
    keepalive_timeout_s: int = 30
    log_level: str = "INFO"
    # L1: "embedded" (py-evm in this process, served at /l1), "rpc" (l1_rpc + l1_deployment), "none"
    l1: str = "embedded"
    l1_rpc: str = ""
    l1_deployment: Path | None = None
    # L1 blocks a message waits for; -1 = auto: 0 on the embedded L1 (it never reorgs), 2 with
    # --l1-rpc (a reorged-out deposit already credited on L2 would be unbacked)
    l1_confirmations: int = -1
    l1_poll_ms: int = 500
    challenge_window_s: int = 10  # the embedded deployment's window
    batch_max_blocks: int = 100
    batch_interval_ms: int = 2000
    keeper: bool = True
    # The poster stopped because the guardian rejected a batch it committed (it never commits a
    # rejected root again): set once, after investigating, to clear the stop and post again.
    resume_after_rejection: bool = False


def effective_confirmations(config: "NodeConfig") -> int:
    """`l1_confirmations`, with -1 (auto) as 0 on the embedded L1 and 2 on a real one."""
    if config.l1_confirmations >= 0:
        return config.l1_confirmations
    return 0 if config.l1 == "embedded" else 2


def _coerce(name: str, raw: Any, target: Any) -> Any:
    if isinstance(target, bool) or target is bool:
        return str(raw).lower() in ("1", "true", "yes")
    if name in ("data_dir", "genesis", "l1_deployment"):
        return Path(str(raw)) if raw not in (None, "") else None
    if isinstance(target, int):
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"config {name}: expected an integer, got {raw!r}") from None
    return str(raw)


def _apply(config: NodeConfig, values: dict[str, Any], origin: str) -> NodeConfig:
    known = {f.name: getattr(config, f.name) for f in fields(NodeConfig)}
    updates: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in known:
            raise ValueError(f"{origin}: unknown setting {name!r}")
        updates[name] = _coerce(name, raw, known[name])
    return replace(config, **updates)


def load_config(
    file: Path | None = None, env: dict[str, str] | None = None, flags: dict[str, Any] | None = None
) -> NodeConfig:
    config = NodeConfig()
    if file is not None:
        with file.open("rb") as fh:
            config = _apply(config, tomllib.load(fh), str(file))
    env = dict(os.environ if env is None else env)
    names = {f.name for f in fields(NodeConfig)}
    from_env = {k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    config = _apply(config, {k: v for k, v in from_env.items() if k in names}, "environment")
    if flags:
        config = _apply(config, {k: v for k, v in flags.items() if v is not None}, "flags")
    _validate(config)
    return config


def _validate(config: NodeConfig) -> None:
    if config.l1 not in ("embedded", "rpc", "none"):
        raise ValueError("l1 is 'embedded', 'rpc' or 'none'")
    if config.l1 == "rpc" and (not config.l1_rpc or config.l1_deployment is None):
        raise ValueError("l1 = 'rpc' needs l1_rpc and l1_deployment (see `fedrollup deploy`)")
    if not 0 < config.port < 65536:
        raise ValueError("port must be in 1..65535")
    for name in (
        "block_time_ms",
        "block_max_actions",
        "max_body_bytes",
        "max_batch_actions",
        "verify_threads",
        "max_concurrent_requests",
        "body_timeout_s",
        "keepalive_timeout_s",
    ):
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be positive")
