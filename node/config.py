"""Node configuration: defaults < TOML file < FEDROLLUP_* environment variables < CLI flags."""

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "FEDROLLUP_"


class ConfigError(ValueError):
    """A setting is unknown or malformed (the CLI reports it without a traceback)."""


# FEDROLLUP_* variables that are not node settings: read by the CLI, the key files, the
# demo script and the test suite. Any other FEDROLLUP_* name is a typo and an error.
OTHER_ENV = frozenset(
    {
        "FEDROLLUP_NODE",  # the CLI's default --node URL
        "FEDROLLUP_KEY_PASSPHRASE",  # passphrase of encrypted ed25519 key files
        "FEDROLLUP_KEY_PASSPHRASE_FILE",  # ... or a file holding it
        "FEDROLLUP_L1_PASSWORD",  # password of L1 keystore files
        "FEDROLLUP_L1_PASSWORD_FILE",  # ... or a file holding it
        "FEDROLLUP_DEMO_PORT",  # scripts/demo.sh
        "FEDROLLUP_LONG",  # the test suite's long runs
        "FEDROLLUP_STATS",  # the test suite's statistics output
    }
)
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


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
    log_format: str = "text"  # "text" or "json" (one JSON object per line)
    # L1: "embedded" (py-evm in this process, served at /l1), "rpc" (l1_rpc + l1_deployment), "none"
    l1: str = "embedded"
    l1_rpc: str = ""
    l1_deployment: Path | None = None
    # keystores (eth-account JSON; password from FEDROLLUP_L1_PASSWORD[_FILE]) of the node's
    # L1 roles: with them the node signs its own transactions and the RPC holds no key
    l1_proposer_keystore: Path | None = None
    l1_keeper_keystore: Path | None = None
    # L1 blocks a message waits for; -1 = auto: 0 on the embedded L1 (it never reorgs), 2 with
    # --l1-rpc (a reorged-out deposit already credited on L2 would be unbacked)
    l1_confirmations: int = -1
    l1_poll_ms: int = 500
    l1_log_window_blocks: int = 1000  # blocks per eth_getLogs call (hosted RPCs cap ranges)
    l1_head_tag: str = "latest"  # or "safe" / "finalized": the watcher waits for that block too
    challenge_window_s: int = 10  # the embedded deployment's window
    batch_max_blocks: int = 100
    batch_interval_ms: int = 2000
    keeper: bool = True
    # The poster stopped because the guardian rejected a batch it committed (it never commits a
    # rejected root again): set once, after investigating, to clear the stop and post again.
    resume_after_rejection: bool = False
    # Storage: archive (keep every block body) unless `prune`; then the bodies of blocks in
    # finalized L1 batches (with --l1 none: `prune_depth` blocks behind the head) lose their
    # submission blobs (full reads answer 410), once their round is aggregated.
    prune: bool = False
    prune_depth: int = 1000
    # A follower (`run --follow URL`): pull, re-execute and check the sequencer's blocks at
    # this URL and serve reads from its own state; no L1, no sequencing, writes refused.
    follow: str = ""
    follow_poll_ms: int = 250  # how often a caught-up follower asks the sequencer's head
    # A sequencer in two processes: an ingress process owns the public port and the mempool
    # log (decode, verify, nonces, fsync); this one executes blocks and serves reads behind it.
    # False (--single-process): one process does everything. A follower is always one.
    split_ingress: bool = True


def effective_confirmations(config: "NodeConfig") -> int:
    """`l1_confirmations`, with -1 (auto) as 0 on the embedded L1 and 2 on a real one."""
    if config.l1_confirmations >= 0:
        return config.l1_confirmations
    return 0 if config.l1 == "embedded" else 2


def _coerce(name: str, raw: Any, target: Any) -> Any:
    if isinstance(target, bool):
        return parse_bool(name, raw)
    if name == "log_level":
        return str(raw).upper()
    if name in (
        "data_dir",
        "genesis",
        "l1_deployment",
        "l1_proposer_keystore",
        "l1_keeper_keystore",
    ):
        return Path(str(raw)) if raw not in (None, "") else None
    if isinstance(target, int):
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"config {name}: expected an integer, got {raw!r}") from None
    return str(raw)


def parse_bool(name: str, raw: Any) -> bool:
    """true/false, 1/0, yes/no, on/off (any case); anything else is an error, not False."""
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"config {name}: expected a boolean (true/false, 1/0, yes/no), got {raw!r}")


def _apply(config: NodeConfig, values: dict[str, Any], origin: str) -> NodeConfig:
    known = {f.name: getattr(config, f.name) for f in fields(NodeConfig)}
    updates: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in known:
            raise ConfigError(f"{origin}: unknown setting {name!r}")
        updates[name] = _coerce(name, raw, known[name])
    return replace(config, **updates)


def config_to_json(config: NodeConfig) -> dict[str, Any]:
    """The settings as JSON values, for a child process (the ingress of a split node)."""
    return {f.name: _json_value(getattr(config, f.name)) for f in fields(NodeConfig)}


def _json_value(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def config_from_json(values: dict[str, Any]) -> NodeConfig:
    return _apply(NodeConfig(), values, "parent process")


def load_config(
    file: Path | None = None, env: dict[str, str] | None = None, flags: dict[str, Any] | None = None
) -> NodeConfig:
    config = NodeConfig()
    if file is not None:
        with file.open("rb") as fh:
            config = _apply(config, tomllib.load(fh), str(file))
    env = dict(os.environ if env is None else env)
    names = {f.name for f in fields(NodeConfig)}
    from_env: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in sorted(env.items()):
        if not key.startswith(ENV_PREFIX) or key in OTHER_ENV:
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in names and key == ENV_PREFIX + name.upper():
            from_env[name] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(
            f"environment: unknown variable{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)} (settings are FEDROLLUP_<NAME> of the configuration table"
            f" in the README, e.g. FEDROLLUP_PORT)"
        )
    config = _apply(config, from_env, "environment")
    if flags:
        config = _apply(config, {k: v for k, v in flags.items() if v is not None}, "flags")
    if config.follow and config.l1 == "embedded":
        config = replace(config, l1="none")  # a follower has no L1 of its own
    if config.follow:
        config = replace(config, split_ingress=False)  # a follower is one process
    _validate(config)
    return config


def _validate(config: NodeConfig) -> None:
    if config.l1 not in ("embedded", "rpc", "none"):
        raise ConfigError("l1 is 'embedded', 'rpc' or 'none'")
    if config.l1 == "rpc" and (not config.l1_rpc or config.l1_deployment is None):
        raise ConfigError("l1 = 'rpc' needs l1_rpc and l1_deployment (see `fedrollup deploy`)")
    if config.l1 != "rpc" and (config.l1_proposer_keystore or config.l1_keeper_keystore):
        raise ConfigError("L1 keystores are for l1 = 'rpc' (the embedded L1 has its own keys)")
    if config.follow and not config.follow.startswith(("http://", "https://")):
        raise ConfigError("follow is the sequencer's http:// or https:// URL")
    if config.follow and config.l1 == "rpc":
        raise ConfigError("a follower has no L1 of its own: drop l1_rpc with follow")
    if config.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"log_level is one of {', '.join(LOG_LEVELS)}")
    if config.l1_head_tag not in ("latest", "safe", "finalized"):
        raise ConfigError("l1_head_tag is 'latest', 'safe' or 'finalized'")
    if config.log_format not in LOG_FORMATS:
        raise ConfigError(f"log_format is one of {', '.join(LOG_FORMATS)}")
    if not 0 < config.port < 65536:
        raise ConfigError("port must be in 1..65535")
    for name in (
        "block_time_ms",
        "block_max_actions",
        "max_body_bytes",
        "max_batch_actions",
        "verify_threads",
        "max_concurrent_requests",
        "body_timeout_s",
        "keepalive_timeout_s",
        "l1_log_window_blocks",
        "prune_depth",
        "follow_poll_ms",
    ):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be positive")
