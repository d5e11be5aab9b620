"""The `fedrollup` command line."""

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from l1_bridge.keystore import KeystoreError
from node.cli_util import tune_garbage_collector
from node.config import LOG_FORMATS, LOG_LEVELS, ConfigError, NodeConfig, load_config
from node.logs import setup_logging
from node.sdk.devkeys import dev_genesis, dev_key
from node.sdk.keys import KeyFileError, passphrase_from_env, read_key, write_key
from rollup.genesis import Genesis

DEFAULT_NODE = os.environ.get("FEDROLLUP_NODE", "http://127.0.0.1:8080")


def _hex32(text: str) -> bytes:
    raw = bytes.fromhex(text.removeprefix("0x"))
    if len(raw) != 32:
        raise argparse.ArgumentTypeError("expected 32 bytes of hex")
    return raw


def _load_genesis(config: NodeConfig) -> Genesis:
    return dev_genesis() if config.genesis is None else Genesis.load(config.genesis)


def cmd_run(args: argparse.Namespace) -> int:
    # One BLAS thread: the results are exact either way, and a second BLAS thread fighting
    # the verifier threads for two cores made the exact Gram matrix 10x slower.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # The event loop shares the GIL with the block-execution thread: hand it back sooner
    # than the default 5 ms, so acceptance latency does not wait behind a whole block.
    sys.setswitchinterval(0.0005)
    flags = {
        "l1": "rpc" if args.l1_rpc else args.l1,
        "l1_rpc": args.l1_rpc,
        "l1_deployment": args.deployment,
        "l1_confirmations": args.l1_confirmations,
        "challenge_window_s": args.challenge_window_s,
        "batch_interval_ms": args.batch_interval_ms,
        "data_dir": args.data_dir,
        "host": args.host,
        "port": args.port,
        "genesis": args.genesis,
        "block_time_ms": args.block_time_ms,
        "block_max_actions": args.block_max_actions,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "l1_proposer_keystore": args.l1_proposer_keystore,
        "l1_keeper_keystore": args.l1_keeper_keystore,
        "prune": args.prune,
        "prune_depth": args.prune_depth,
        "follow": args.follow,
        "follow_poll_ms": args.follow_poll_ms,
        "split_ingress": args.split_ingress,
    }
    config = load_config(args.config, flags=flags)
    setup_logging(config.log_level, config.log_format)
    from node.core.follower import (
        DIVERGED_EXIT_CODE,
        divergence_path,
        divergence_refusal,
        followed_url,
    )
    from node.halt import HALT_EXIT_CODE, read_halt, refusal

    if (refused := refusal(config.data_dir)) is not None:
        print(refused, file=sys.stderr, flush=True)
        return HALT_EXIT_CODE
    if (diverged := divergence_refusal(config.data_dir)) is not None:
        print(diverged, file=sys.stderr, flush=True)
        return DIVERGED_EXIT_CODE
    if not config.follow and (followed := followed_url(config.data_dir)) is not None:
        print(
            f"refusing to start: {config.data_dir} is the data dir of a follower of {followed};"
            f" run it with --follow {followed} (a follower does not become a sequencer)",
            file=sys.stderr,
            flush=True,
        )
        return 2
    from aiohttp import web  # the app's imports, only once the node may start

    from node.server.app import create_app

    genesis = _load_genesis(config)
    tune_garbage_collector()
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    logging.getLogger("fedrollup").info(
        "chain %d, data dir %s, event loop %s",
        genesis.chain_id,
        config.data_dir,
        type(loop).__module__ + "." + type(loop).__qualname__,
    )
    if config.split_ingress:
        from node.server.split import run_split

        code = loop.run_until_complete(run_split(config, genesis))
        if read_halt(config.data_dir) is not None:
            return HALT_EXIT_CODE
        return code
    app = create_app(config, genesis)
    web.run_app(
        app,
        host=config.host,
        port=config.port,
        print=lambda m: print(m, flush=True),
        access_log=None,
        loop=loop,
    )
    if read_halt(config.data_dir) is not None:
        return HALT_EXIT_CODE
    return DIVERGED_EXIT_CODE if divergence_path(config.data_dir).exists() else 0


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The node's event loop: uvloop, which roughly halves the loop's cost per request.

    /metrics names the loop that serves it (`fedrollup_node_info{event_loop=...}`).
    """
    import uvloop

    return uvloop.new_event_loop()


def _is_nonzero_address(text: str) -> bool:
    raw = text.removeprefix("0x")
    return len(raw) == 40 and all(c in "0123456789abcdefABCDEF" for c in raw) and int(raw, 16) != 0


def cmd_deploy(args: argparse.Namespace) -> int:
    import tempfile

    from l1_bridge.batches import genesis_output_root
    from l1_bridge.link import deploy_to_rpc
    from rollup.chain import Chain
    from rollup.store import ChainStore

    genesis = dev_genesis() if args.genesis is None else Genesis.load(args.genesis)
    with tempfile.TemporaryDirectory() as tmp:
        store = ChainStore(Path(tmp))
        Chain(store, genesis)
        block0 = store.live.block(0)
        assert block0 is not None
        root = genesis_output_root(block0)
        store.close()
    deployer = None
    roles: dict[str, str | None] = {role: getattr(args, role) for role in DEPLOY_ROLES}
    for role, address in roles.items():
        if address is not None and not _is_nonzero_address(address):
            print(f"{_role_flag(role)}: not an L1 address, or the zero address", file=sys.stderr)
            return 2
    if args.keystore is not None:
        from l1_bridge.keystore import load_keystore

        deployer = load_keystore(args.keystore)
        if args.role_keystores is not None:
            roles = _derive_role_keystores(args.role_keystores, roles)
        defaulted = [_role_flag(r) for r, v in roles.items() if not v]
        if defaulted:
            print(
                f"warning: {', '.join(defaulted)} not given: the deployer's address takes"
                " those roles too (give each role its own address on a real chain, or"
                " --role-keystores DIR)",
                file=sys.stderr,
            )
    elif any(roles.values()) or args.role_keystores is not None:
        print("role addresses and --role-keystores need --keystore", file=sys.stderr)
        return 2
    deployment = deploy_to_rpc(
        args.l1_rpc,
        root,
        args.out,
        args.challenge_window_s,
        args.unbonding_s,
        deployer=deployer,
        roles={k: v for k, v in roles.items() if v},
    )
    print(json.dumps({"deployment": str(args.out), "inbox": deployment.inbox.address}))
    return 0


DEPLOY_ROLES = ("admin", "proposer", "guardian", "challenger", "protocol_addr")


def _role_flag(role: str) -> str:
    return "--" + role.replace("_", "-")


def _derive_role_keystores(folder: Path, roles: dict[str, str | None]) -> dict[str, str | None]:
    """A fresh keystore `folder/<role>.json` for every role not given an address (password:
    the deployer's, from the environment); an existing file is used, never overwritten."""
    from eth_account import Account

    from l1_bridge.keystore import load_keystore, write_keystore

    filled = dict(roles)
    for role, address in roles.items():
        if address:
            continue
        path = folder / f"{role}.json"
        if path.exists():
            filled[role] = load_keystore(path).address
        else:
            filled[role] = write_keystore(path, Account.create())
        print(f"{_role_flag(role)}: {filled[role]} (keystore {path})", file=sys.stderr)
    return filled


def cmd_keygen(args: argparse.Namespace) -> int:
    from nacl.signing import SigningKey

    key = dev_key(args.dev) if args.dev is not None else SigningKey.generate()
    if args.out is not None:
        if args.out.exists() and not args.force:
            print(f"{args.out} exists; use --force to overwrite", file=sys.stderr)
            return 1
        passphrase = None
        if args.encrypt:
            passphrase = passphrase_from_env()
            if passphrase is None:
                print(
                    "--encrypt: set FEDROLLUP_KEY_PASSPHRASE or FEDROLLUP_KEY_PASSPHRASE_FILE"
                    " (a passphrase is never taken from the command line)",
                    file=sys.stderr,
                )
                return 2
        write_key(args.out, key, passphrase)
    elif args.encrypt:
        print("--encrypt needs --out", file=sys.stderr)
        return 2
    print("0x" + bytes(key.verify_key).hex())
    return 0


def cmd_l1_keygen(args: argparse.Namespace) -> int:
    from eth_account import Account

    from l1_bridge.keystore import (
        PASSWORD_ENV,
        PASSWORD_FILE_ENV,
        password_from_env,
        write_keystore,
    )

    if args.out.exists() and not args.force:
        print(f"{args.out} exists; use --force to overwrite", file=sys.stderr)
        return 1
    if password_from_env() is None:
        print(
            f"set {PASSWORD_ENV} or {PASSWORD_FILE_ENV} (a password is never taken from the"
            " command line)",
            file=sys.stderr,
        )
        return 2
    print(write_keystore(args.out, Account.create()))
    return 0


def cmd_genesis(args: argparse.Namespace) -> int:
    genesis = dev_genesis(args.dev_accounts, args.chain_id)
    text = json.dumps(genesis.to_json(), indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    return 0


def _need(args: argparse.Namespace, *names: str) -> list[Any]:
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is None]
    if missing:
        raise ValueError(f"needs {', '.join(missing)}")
    return [getattr(args, n) for n in names]


def _payload(args: argparse.Namespace) -> Any:
    """The payload of the simple actions; models, jobs and submissions go through the SDK."""
    from stf import identity, jobs, models, staking
    from stf.accounts import Transfer

    a = args.action
    if a == "transfer":
        return Transfer(*_need(args, "to", "amount"))
    if a == "stake":
        return jobs.Amount(*_need(args, "amount"))
    if a == "unstake":
        return staking.Unstake(args.amount or 0)
    if a == "bind_l1":
        (address,) = _need(args, "address")
        return identity.BindL1(bytes.fromhex(address.removeprefix("0x")))
    if a == "withdraw":
        (amount,) = _need(args, "amount")
        return jobs.Withdraw(amount, bytes.fromhex((args.recipient or "").removeprefix("0x")))
    if a == "set_price":
        return models.SetPrice(*_need(args, "model", "price"))
    if a == "message":
        return models.PostMessage(*_need(args, "proposal", "text"))
    if a in ("reject", "cancel"):
        return models.ProposalRef(*_need(args, "proposal"))
    if a == "aggregate":
        job, rnd = _need(args, "job", "round")
        return jobs.AggregateRound(job, rnd, args.accuracy_bp or 0)
    raise ValueError("unknown action")


def cmd_send(args: argparse.Namespace) -> int:
    from node.sdk.client import ApiError, Client

    client = Client(args.node)
    key = read_key(args.key)
    try:
        payload = _payload(args)
    except (TypeError, ValueError) as exc:
        print(f"{args.action}: {exc}", file=sys.stderr)
        return 2
    try:
        action_hash = client.send(key, args.action, payload, nonce=args.nonce)
        print(json.dumps({"hash": action_hash, "status": "accepted"}))
        if args.wait:
            status = client.wait(action_hash, timeout=args.timeout)
            print(json.dumps(status, indent=2))
            return 2 if status["status"] == "failed" else 0
    except ApiError as exc:
        print(
            json.dumps({"error": exc.code, "detail": exc.detail, "http_status": exc.status}),
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from node.sdk.client import ApiError, Client

    client = Client(args.node)
    try:
        if args.hash:
            out: Any = client.action(args.hash)
        elif args.account:
            out = client.account(args.account)
        else:
            out = client.health()
    except ApiError as exc:
        print(json.dumps({"error": exc.code, "detail": exc.detail}), file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from node.core.replay import replay_from_node

    report = replay_from_node(
        args.node, _load_genesis(load_config(args.config, flags={"genesis": args.genesis}))
    )
    print(json.dumps(report, indent=2))
    return 0 if report["match"] else int(report.get("exit_code", 3))


# Modules of the `train` extra: the participant's side, the demo and the experiment need them.
TRAIN_MODULES = ("torch", "sklearn", "matplotlib", "rich")
TRAIN_HINT = "pip install 'fedrollup[train]'"


def missing_train_modules() -> list[str]:
    import importlib.util

    return [m for m in TRAIN_MODULES if importlib.util.find_spec(m) is None]


def _require_train_extra(command: str) -> bool:
    missing = missing_train_modules()
    if missing:
        print(
            f"fedrollup {command} needs the train extra (missing: {', '.join(missing)}); "
            f"install it with: {TRAIN_HINT}",
            file=sys.stderr,
        )
        return False
    return True


def cmd_demo(args: argparse.Namespace) -> int:
    if not _require_train_extra("demo"):
        return 2
    from node.participant.demo import main as demo_main

    return demo_main(args)


def cmd_train(args: argparse.Namespace) -> int:
    if not _require_train_extra("train"):
        return 2
    if args.l1_keystore is not None:
        if args.l1_key:
            print("--l1-keystore and --l1-key exclude each other", file=sys.stderr)
            return 2
        from l1_bridge.keystore import load_keystore

        # handed to the trainer in memory, never through argv
        args.l1_key = "0x" + bytes(load_keystore(args.l1_keystore).key).hex()
    elif args.l1_key:
        logging.getLogger("fedrollup").warning(
            "--l1-key puts a private key on the command line; use --l1-keystore"
        )
    from node.participant.trainer import main as train_main

    return train_main(args)


def cmd_verify(args: argparse.Namespace) -> int:
    from l1_bridge.keystore import load_keystore
    from node.ops.verify import EXIT_INCONCLUSIVE, NotChallenger, verify

    genesis = dev_genesis() if args.genesis is None else Genesis.load(args.genesis)
    if args.challenge and args.challenger_keystore is None:
        print("--challenge needs --challenger-keystore", file=sys.stderr)
        return 2
    if args.l1_log_window_blocks < 1:
        print("--l1-log-window-blocks: at least 1", file=sys.stderr)
        return 2
    challenger = load_keystore(args.challenger_keystore) if args.challenge else None
    try:
        report = verify(
            args.node,
            args.l1_rpc,
            args.deployment,
            genesis,
            challenger,
            log_window=args.l1_log_window_blocks,
            head_tag=args.l1_head_tag,
        )
    except NotChallenger as exc:
        print(f"fedrollup verify: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # L1 or node unreachable, a chain without the tag: no verdict
        print(f"fedrollup verify: inconclusive: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INCONCLUSIVE
    print(json.dumps(report, indent=2))
    return int(report["exit_code"])


def cmd_experiment(args: argparse.Namespace) -> int:
    if not _require_train_extra("experiment"):
        return 2
    import importlib.util

    if args.backend == "ray" and importlib.util.find_spec("ray") is None:
        print("--backend ray needs the ray extra: pip install 'fedrollup[ray]'", file=sys.stderr)
        return 2
    from node.participant.experiment import main as experiment_main

    return experiment_main(args)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.which == "ingest":
        from node.bench.bench_ingest import main as bench_ingest

        return bench_ingest(args)
    if args.which == "execute":
        from node.bench.bench_execute import main as bench_execute

        return bench_execute(args)
    if args.which == "gas":
        from l1_bridge.gasbench import format_gas, measure, write_snapshot

        gas = measure()
        print("gasUsed (incl. 21,000 intrinsic), py-evm:")
        print(format_gas(gas))
        if args.write_snapshot:
            write_snapshot(gas)
        return 0
    if args.which == "krum":
        from node.bench.bench_krum import format_krum_table, run_krum_bench, time_full_aggregate
        from stf.metering import DEFAULT_MAX_AGGREGATE_WORK

        rows = run_krum_bench(repeats=args.repeats)
        print(format_krum_table(rows))
        _print_full_aggregate(time_full_aggregate, 100, 10**6, args.repeats)
        limit = DEFAULT_MAX_AGGREGATE_WORK // 10**6  # participants of 10^6 parameters
        _print_full_aggregate(time_full_aggregate, limit, 10**6, 1)
        return 0
    if args.which in ("storage", "restart"):
        from node.bench.bench_storage import main as bench_storage

        return bench_storage(args)
    raise SystemExit(f"unknown benchmark {args.which}")


def _print_full_aggregate(
    bench: Callable[..., dict[str, float]], n: int, d: int, repeats: int
) -> None:
    runs = [bench(n, d, seed=s) for s in range(max(1, repeats))]
    times = sorted(r["aggregate_s"] for r in runs)
    listed = ", ".join(f"{r['aggregate_s']:.2f}" for r in runs)
    ratios = sorted(r["peak_extra_ratio"] for r in runs)
    print(
        f"full `aggregate` action, n={n}, d={d:,}: median {times[len(times) // 2]:.2f} s "
        f"(runs: {listed}); submissions "
        f"{runs[0]['submissions_mb']:.0f} MiB, peak extra memory "
        f"{runs[0]['peak_extra_mb']:.0f} MiB = {ratios[len(ratios) // 2]:.2f} x submissions"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedrollup", description="fedrollup: a micro-rollup node for federated learning"
    )
    p.add_argument("--version", action="version", version=f"fedrollup {package_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a sequencer node, or a follower of one (--follow)")
    run.add_argument("--config", type=Path, help="TOML config file")
    run.add_argument("--data-dir", type=Path)
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument(
        "--genesis", type=Path, help="genesis JSON (default: the embedded dev genesis)"
    )
    run.add_argument("--block-time-ms", type=int)
    run.add_argument("--block-max-actions", type=int)
    run.add_argument(
        "--l1", choices=["embedded", "none"], help="default: embedded py-evm, served at /l1"
    )
    run.add_argument(
        "--l1-rpc", help="a real L1 node (anvil, geth, a testnet) instead of the embedded one"
    )
    run.add_argument(
        "--deployment", type=Path, help="with --l1-rpc: the file `fedrollup deploy` wrote"
    )
    run.add_argument(
        "--l1-proposer-keystore",
        type=Path,
        help="with --l1-rpc: the proposer's keystore; the node signs its commits itself",
    )
    run.add_argument("--l1-keeper-keystore", type=Path, help="with --l1-rpc: the keeper's keystore")
    run.add_argument("--l1-confirmations", type=int)
    run.add_argument("--challenge-window-s", type=int, help="embedded L1: the challenge window")
    run.add_argument("--batch-interval-ms", type=int)
    run.add_argument(
        "--prune",
        action="store_const",
        const=True,
        help="drop submission blobs of finalized blocks (default: archive, keep everything)",
    )
    run.add_argument(
        "--prune-depth", type=int, help="with --l1 none: prune blocks this far behind the head"
    )
    run.add_argument(
        "--follow",
        metavar="URL",
        help="follow the sequencer at URL: re-execute and check its blocks, serve reads, refuse"
        " writes (no L1, no sequencing)",
    )
    run.add_argument(
        "--follow-poll-ms", type=int, help="with --follow: how often to ask the sequencer's head"
    )
    run.add_argument(
        "--split-ingress",
        action="store_const",
        const=True,
        help="two processes (the default): an ingress (decode, verify, durable log) on --port,"
        " and an executor (blocks, LevelDB, reads) behind it on loopback",
    )
    run.add_argument(
        "--single-process",
        dest="split_ingress",
        action="store_const",
        const=False,
        help="one process does everything (ingress, blocks, reads)",
    )
    run.set_defaults(func=cmd_run)

    dep = sub.add_parser(
        "deploy", help="deploy the L1 contracts to an L1 node and write a deployment file"
    )
    dep.add_argument("--l1-rpc", required=True)
    dep.add_argument("--out", type=Path, required=True)
    dep.add_argument(
        "--genesis", type=Path, help="the rollup genesis (default: the embedded dev genesis)"
    )
    dep.add_argument("--challenge-window-s", type=int, default=10)
    dep.add_argument(
        "--unbonding-s",
        type=int,
        default=7 * 86_400,
        help="the StakingRegistry's escape delay: seconds without a commit before stakers may "
        "exit directly (default 7 days)",
    )
    dep.add_argument(
        "--keystore",
        type=Path,
        help="the deployer's keystore (password: $FEDROLLUP_L1_PASSWORD[_FILE]); transactions"
        " are signed here. Without it: the RPC's unlocked accounts 0-3 (dev chains)",
    )
    for role in DEPLOY_ROLES:
        dep.add_argument(
            _role_flag(role),
            dest=role,
            help=f"with --keystore: the {role.replace('_', ' ')} address (default: a keystore"
            " made in --role-keystores, else the deployer)",
        )
    dep.add_argument(
        "--role-keystores",
        type=Path,
        help="with --keystore: make a fresh keystore DIR/<role>.json for every role not given"
        " an address (an existing one is reused), so no role is the deployer",
    )
    dep.set_defaults(func=cmd_deploy)

    kg = sub.add_parser("keygen", help="make an ed25519 key file and print its public key")
    kg.add_argument("--out", type=Path)
    kg.add_argument(
        "--dev", type=int, help="write well-known dev key N (funded in the dev genesis; public!)"
    )
    kg.add_argument("--force", action="store_true")
    kg.add_argument(
        "--encrypt",
        action="store_true",
        help="encrypt the key file (argon2id + XSalsa20-Poly1305) with the passphrase in"
        " $FEDROLLUP_KEY_PASSPHRASE or the file named by $FEDROLLUP_KEY_PASSPHRASE_FILE",
    )
    kg.set_defaults(func=cmd_keygen)

    l1kg = sub.add_parser(
        "l1-keygen",
        help="make an L1 account in an eth-account keystore file and print its address",
    )
    l1kg.add_argument("--out", type=Path, required=True)
    l1kg.add_argument("--force", action="store_true")
    l1kg.set_defaults(func=cmd_l1_keygen)

    gen = sub.add_parser("genesis", help="write a dev genesis file")
    gen.add_argument("--dev-accounts", type=int, default=10)
    gen.add_argument("--chain-id", type=int, default=1337)
    gen.add_argument("--out", type=Path)
    gen.set_defaults(func=cmd_genesis)

    send = sub.add_parser("send", help="sign and submit an action")
    send.add_argument(
        "action",
        choices=[
            "transfer",
            "bind_l1",
            "stake",
            "unstake",
            "withdraw",
            "set_price",
            "message",
            "reject",
            "cancel",
            "aggregate",
        ],
    )
    send.add_argument("--key", type=Path, required=True, help="sender key file")
    send.add_argument("--node", default=DEFAULT_NODE)
    send.add_argument("--to", type=_hex32, help="transfer: recipient public key")
    send.add_argument(
        "--amount", type=int, help="transfer, withdraw, unstake (0 = all): amount in wei"
    )
    send.add_argument("--address", help="bind_l1: the 0x L1 address this key names, once")
    send.add_argument(
        "--recipient", help="withdraw: the L1 address to pay (default: the key's bound address)"
    )
    send.add_argument("--model", help="set_price: model id")
    send.add_argument("--price", type=int, help="set_price: price in wei")
    send.add_argument("--proposal", type=int, help="message, reject, cancel: proposal id")
    send.add_argument("--text", help="message: text")
    send.add_argument("--job", type=int, help="aggregate: job id")
    send.add_argument("--round", type=int, help="aggregate: round")
    send.add_argument(
        "--accuracy-bp", type=int, help="aggregate: reported accuracy in basis points"
    )
    send.add_argument("--nonce", type=int, help="default: the node's next nonce for the key")
    send.add_argument("--wait", action="store_true", help="wait for the receipt")
    send.add_argument("--timeout", type=float, default=30.0)
    send.set_defaults(func=cmd_send)

    st = sub.add_parser("status", help="node health, or an action's status, or an account")
    st.add_argument("hash", nargs="?", help="action hash")
    st.add_argument("--account", type=_hex32)
    st.add_argument("--node", default=DEFAULT_NODE)
    st.set_defaults(func=cmd_status)

    rp = sub.add_parser(
        "replay", help="re-execute every block of a node from genesis and compare roots"
    )
    rp.add_argument("--node", default=DEFAULT_NODE)
    rp.add_argument("--config", type=Path)
    rp.add_argument("--genesis", type=Path)
    rp.set_defaults(func=cmd_replay)

    demo = sub.add_parser(
        "demo", help="the federated-learning demo: real training, attacks, L1 settlement"
    )
    demo.add_argument(
        "--attack",
        default="sign_flip",
        choices=["sign_flip", "gaussian", "label_flip", "alie", "ipm"],
    )
    demo.add_argument("--clients", type=int, default=20)
    demo.add_argument("--attackers", type=int, default=4)
    demo.add_argument("--free-riders", type=int, default=2)
    demo.add_argument("--rounds", type=int, default=30)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, default=Path("demo-accuracy.png"))
    demo.add_argument("--json", action="store_true", help="also print a JSON summary")
    demo.set_defaults(func=cmd_demo)

    tr = sub.add_parser("train", help="take part in a training job as one participant")
    tr.add_argument("--job", type=int, required=True)
    tr.add_argument("--key", type=Path, required=True, help="the participant's rollup key file")
    tr.add_argument(
        "--data", required=True, help="digits:INDEX/COUNT[:SEED], a share of the non-IID split"
    )
    tr.add_argument("--node", default=DEFAULT_NODE)
    tr.add_argument(
        "--behaviour",
        default="honest",
        choices=[
            "honest",
            "sign_flip",
            "gaussian",
            "label_flip",
            "alie",
            "ipm",
            "free_rider",
            "disguised_free_rider",
            "delta_replay",
        ],
    )
    tr.add_argument(
        "--l1-keystore",
        type=Path,
        help="the L1 account to stake with, if the job needs more stake: an eth-account"
        " keystore (password: $FEDROLLUP_L1_PASSWORD or $FEDROLLUP_L1_PASSWORD_FILE)",
    )
    tr.add_argument(
        "--l1-key",
        help="deprecated: an L1 private key (0x hex) on the command line, where other users"
        " can read it; use --l1-keystore",
    )
    tr.add_argument("--l1-rpc", help="default: the node's embedded L1")
    tr.add_argument(
        "--fund-from-dev", action="store_true", help="dev chains: fund the L1 key from account 0"
    )
    tr.set_defaults(func=cmd_train)

    ver = sub.add_parser("verify", help="replay every committed batch and challenge a wrong root")
    ver.add_argument("--node", default=DEFAULT_NODE)
    ver.add_argument("--l1-rpc", help="default: the node's embedded L1 at <node>/l1")
    ver.add_argument("--deployment", type=Path, help="default: the node's /v1/l1/deployment")
    ver.add_argument("--genesis", type=Path)
    ver.add_argument(
        "--challenge", action="store_true", help="send challenge(index) for a wrong root"
    )
    ver.add_argument(
        "--challenger-keystore",
        type=Path,
        help="with --challenge: the keystore of an account with the challenger role (password:"
        " $FEDROLLUP_L1_PASSWORD[_FILE]); the challenge is signed here and sent raw",
    )
    ver.add_argument(
        "--l1-log-window-blocks",
        type=int,
        default=1000,
        help="at most this many L1 blocks per eth_getLogs call (default 1000)",
    )
    ver.add_argument(
        "--l1-head-tag",
        choices=["latest", "safe", "finalized"],
        default="latest",
        help="read L1 as of this block (safe/finalized: post-merge chains, anvil; a chain"
        " without the tag gives exit 6, never a weaker head)",
    )
    ver.set_defaults(func=cmd_verify)

    exp = sub.add_parser(
        "experiment",
        help="the attack matrix (every attack x fedrollup/FedAvg x 3 seeds) and the honest sweep",
    )
    exp.add_argument("--rounds", type=int, default=0, help="attack rounds (default 30)")
    exp.add_argument("--sweep-rounds", type=int, default=0, help="sweep rounds (default 100)")
    exp.add_argument("--quick", action="store_true", help="a small matrix and sweep")
    exp.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="the attack matrix's seeds (default 0 1 2; the data split and training)",
    )
    exp.add_argument(
        "--workers",
        type=int,
        default=1,
        help="local: simulations run in parallel processes; ray: the Ray pool's CPUs",
    )
    exp.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="where participants train: in process (default) or on a local Ray pool "
        "(needs the ray extra); the same CSVs either way",
    )
    exp.add_argument("--skip-attacks", action="store_true")
    exp.add_argument("--skip-sweep", action="store_true")
    exp.add_argument("--csv", type=Path, default=Path("experiment.csv"))
    exp.add_argument("--sweep-csv", type=Path, default=Path("sweep.csv"))
    exp.add_argument("--plot", type=Path, default=Path("experiment.png"))
    exp.set_defaults(func=cmd_experiment)

    bench = sub.add_parser("bench", help="benchmarks")
    bench.add_argument("which", choices=["ingest", "execute", "krum", "gas", "storage", "restart"])
    bench.add_argument(
        "--write-snapshot", action="store_true", help="gas: update l1_bridge/gas-snapshot.json"
    )
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--accounts", type=int, default=10_000)
    bench.add_argument("--actions", type=int, default=60_000, help="ingest: actions per scenario")
    bench.add_argument("--connections", type=int, default=16)
    bench.add_argument(
        "--mode",
        choices=["both", "single-process", "split-ingress"],
        default="both",
        help="ingest: which node mode(s) to measure (both: in the same run, for ratios)",
    )
    bench.add_argument(
        "--l1",
        choices=["none", "embedded"],
        default="none",
        help="ingest: the node's L1 (embedded: py-evm in the node's own interpreter, a dev L1)",
    )
    bench.add_argument("--blocks", type=int, default=10, help="execute: blocks timed")
    bench.add_argument(
        "--profile", action="store_true", help="execute: cProfile of the timed blocks"
    )
    bench.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    bench.set_defaults(func=cmd_bench)
    # every subcommand takes the logging options (after its name: `fedrollup run --log-level`)
    for command in sub.choices.values():
        command.add_argument(
            "--log-level",
            type=str.upper,
            choices=LOG_LEVELS,
            help="default: INFO for run (also the log_level setting), WARNING otherwise",
        )
        command.add_argument(
            "--log-format",
            choices=LOG_FORMATS,
            help="text (default) or json, one object per line (run: also the log_format setting)",
        )
    return p


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fedrollup")
    except PackageNotFoundError:  # a bare source tree, not installed
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":  # `run` reads both from its configuration (default INFO)
        setup_logging(args.log_level or "WARNING", args.log_format or "text")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:  # a typo in a setting: say which, without a traceback
        print(f"fedrollup {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except (KeyFileError, KeystoreError) as exc:  # a missing or wrong passphrase, a bad file
        print(f"fedrollup {args.command}: key file: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
