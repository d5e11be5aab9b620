"""The node's connection to L1: an embedded py-evm chain (the zero-setup default) or a real
node over JSON-RPC (anvil, geth, a testnet), with the contract deployment and the node's
L1 accounts (proposer, keeper, challenger)."""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import EthereumTesterProvider, Web3
from web3._utils.encoding import Web3JsonEncoder

from l1_bridge.contracts import Deployment, deploy_all
from l1_bridge.keystore import use_local_signers

log = logging.getLogger(__name__)

DEV_CHALLENGE_WINDOW_S = 10
DEV_UNBONDING_S = 120
DEV_MIN_STAKE = 10**18
DEV_PROTOCOL_FEE_BPS = 100
DEV_INCLUSION_WINDOW_S = 120  # the embedded deployment's forced-inclusion window


@dataclass
class L1Link:
    w3: Web3
    deployment: Deployment
    proposer: str
    keeper: str
    challenger: str
    provider: EthereumTesterProvider | None = None  # set when embedded
    _raw: Any = None  # the embedded provider's request function, without web3's client middleware

    @property
    def embedded(self) -> bool:
        return self.provider is not None

    def mine(self) -> None:
        """Embedded chains only make blocks on transactions; a keeper tick moves time on."""
        if self.provider is not None:
            tester: Any = self.provider.ethereum_tester
            tester.mine_blocks(1)

    def rpc(self, request: dict[str, Any]) -> str:
        """Serve one JSON-RPC request against the embedded chain (the node's /l1 route), so
        trainers and wallets in other processes reach it like any L1 node."""
        assert self.provider is not None
        method, params = str(request.get("method")), list(request.get("params") or [])
        try:
            result = self._rpc_result(method, params)
            response: dict[str, Any] = {
                "jsonrpc": "2.0",
                "id": request.get("id"),
                "result": _quantities(result),
            }
        except Exception as exc:  # a JSON-RPC error object, as a real node answers
            response = {
                "jsonrpc": "2.0",
                "id": request.get("id"),
                "error": _rpc_error(exc),
            }
        return json.dumps(response, cls=Web3JsonEncoder)

    def _rpc_result(self, method: str, params: list[Any]) -> Any:
        assert self.provider is not None
        tester: Any = self.provider.ethereum_tester
        if method == "evm_increaseTime":  # eth-tester lacks it; tests of challenge windows need it
            seconds = int(params[0], 0) if isinstance(params[0], str) else int(params[0])
            tester.time_travel(int(tester.get_block_by_number("pending")["timestamp"]) + seconds)
            return 0
        if self._raw is None:
            bare = Web3(self.provider, middleware=[])
            self._raw = self.provider.request_func(bare, bare.middleware_onion)
        if method == "eth_sendTransaction" and params and "gas" not in params[0]:
            estimate = self._raw("eth_estimateGas", [params[0]])
            if "error" in estimate:
                raise RuntimeError(str(estimate["error"]))
            params = [
                {**params[0], "gas": hex(int(str(estimate["result"]), 0) * 12 // 10 + 10_000)}
            ]
        response = self._raw(method, params)
        if "error" in response:
            raise RuntimeError(str(response["error"].get("message", response["error"])))
        return response["result"]


def _rpc_error(exc: Exception) -> dict[str, Any]:
    """Reverts carry their data (code 3, as geth and anvil answer), so clients decode errors."""
    from l1_bridge.contracts import revert_data

    data = revert_data(exc)
    if data is None:
        return {"code": -32000, "message": str(exc)}
    return {"code": 3, "message": "execution reverted", "data": "0x" + data.hex()}


def _quantities(value: Any) -> Any:
    """JSON-RPC quantities are hex strings; eth-tester's results carry Python ints."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, dict):
        return {k: _quantities(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_quantities(v) for v in value]
    return value


def embedded_link(
    genesis_output_root: bytes, challenge_window_s: int = DEV_CHALLENGE_WINDOW_S
) -> L1Link:
    """Start py-evm in this process, deploy the contracts, use its funded dev accounts."""
    provider = EthereumTesterProvider()
    w3 = Web3(provider)
    accounts = list(w3.eth.accounts)
    unbonding_s = max(DEV_UNBONDING_S, 2 * challenge_window_s)
    deployment = deploy_dev(w3, genesis_output_root, challenge_window_s, unbonding_s)
    log.info("embedded L1 (py-evm): contracts deployed, inbox %s", deployment.inbox.address)
    return L1Link(
        w3,
        deployment,
        proposer=accounts[0],
        keeper=accounts[4],
        challenger=accounts[2],
        provider=provider,
    )


def rpc_link(
    url: str,
    deployment_file: Path,
    keeper: str | None = None,
    proposer_account: LocalAccount | None = None,
    keeper_account: LocalAccount | None = None,
) -> L1Link:
    """A real L1 node. With keystore accounts the node signs its own transactions (EIP-1559,
    see `l1_bridge.keystore`); without, its accounts must be unlocked there (anvil's are)."""
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
    deployment = Deployment.from_json(w3, deployment_file.read_text())
    proposer = deployment.current_proposer()  # the admin may have rotated it since the deploy
    if proposer_account is not None and proposer_account.address != proposer:
        raise ValueError(
            f"the proposer keystore holds {proposer_account.address}, but the deployment's"
            f" proposer is {proposer}"
        )
    use_local_signers(w3, [a for a in (proposer_account, keeper_account) if a is not None])
    if proposer_account is None or keeper_account is None:
        log.warning(
            "L1 transactions of the %s go out as eth_sendTransaction from the RPC's unlocked"
            " accounts: for dev chains only (give --l1-proposer-keystore/--l1-keeper-keystore)",
            " and ".join(
                role
                for role, account in (("proposer", proposer_account), ("keeper", keeper_account))
                if account is None
            ),
        )
    if keeper_account is not None:
        keeper = keeper_account.address
    if keeper is None:
        # no keystore: anvil's unlocked account 4, as the embedded L1 does
        accounts = list(w3.eth.accounts)
        keeper = accounts[4] if len(accounts) > 4 else proposer
    return L1Link(
        w3,
        deployment,
        proposer=proposer,
        keeper=keeper,
        challenger=deployment.params.challenger,
    )


def deploy_to_rpc(
    url: str,
    genesis_output_root: bytes,
    out: Path,
    challenge_window_s: int,
    unbonding_s: int,
    min_stake_wei: int = DEV_MIN_STAKE,
    deployer: LocalAccount | None = None,
    roles: dict[str, str] | None = None,
    inclusion_window_s: int = 3_600,
) -> Deployment:
    """`fedrollup deploy`: deploy and write the deployment file (a real chain: a one-hour
    forced-inclusion window by default).

    Without `deployer`: the RPC node's unlocked accounts 0-3 (dev chains). With a keystore
    `deployer`: its transactions are signed here; `roles` names the admin, proposer, guardian,
    challenger and protocol fee recipient (the CLI fills each one, see `fedrollup deploy`; one
    left out here defaults to the deployer's address)."""
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
    if deployer is None:
        deployment = deploy_dev(
            w3,
            genesis_output_root,
            challenge_window_s,
            unbonding_s,
            min_stake_wei,
            inclusion_window_s=inclusion_window_s,
        )
    else:
        use_local_signers(w3, [deployer])
        named = {
            role: (roles or {}).get(role) or deployer.address
            for role in ("admin", "proposer", "guardian", "challenger", "protocol_addr")
        }
        for role, address in named.items():
            if int(address, 16) == 0:
                raise ValueError(f"{role}: the zero address is refused")
        deployment = deploy_all(
            w3,
            deployer=deployer.address,
            challenge_window_s=challenge_window_s,
            unbonding_s=unbonding_s,
            min_stake_wei=min_stake_wei,
            protocol_fee_bps=DEV_PROTOCOL_FEE_BPS,
            genesis_output_root=genesis_output_root,
            proposer=named["proposer"],
            guardian=named["guardian"],
            challenger=named["challenger"],
            protocol_addr=named["protocol_addr"],
            admin=named["admin"],
            inclusion_window_s=inclusion_window_s,
        )
    out.write_text(deployment.to_json())
    return deployment


def deploy_dev(
    w3: Web3,
    genesis_output_root: bytes,
    challenge_window_s: int,
    unbonding_s: int,
    min_stake_wei: int = DEV_MIN_STAKE,
    max_pending_batches: int = 512,
    inclusion_window_s: int = DEV_INCLUSION_WINDOW_S,
) -> Deployment:
    """Deploy with the node's dev roles: accounts 0 deployer and proposer, 1 guardian,
    2 challenger, 3 protocol fee recipient, 6 admin (the keeper uses 4)."""
    a = list(w3.eth.accounts)
    return deploy_all(
        w3,
        deployer=a[0],
        proposer=a[0],
        guardian=a[1],
        challenger=a[2],
        challenge_window_s=challenge_window_s,
        unbonding_s=unbonding_s,
        min_stake_wei=min_stake_wei,
        protocol_fee_bps=DEV_PROTOCOL_FEE_BPS,
        protocol_addr=a[3],
        admin=a[6],
        genesis_output_root=genesis_output_root,
        max_pending_batches=max_pending_batches,
        inclusion_window_s=inclusion_window_s,
    )
