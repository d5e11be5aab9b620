"""`fedrollup verify`: an independent verifier. It trusts only the genesis, L1, and the
signatures on the actions; it replays every committed batch from the node's batch data,
checks each L1 message the node claims against the inbox's own events, recomputes the
output root, checks the count of L1 messages the commit says the batch consumed (forced
inclusion) against the replayed state, and challenges a batch whose committed root or count
is wrong while its window is open. Resolution is by the guardian (see the trust model in the
README).

L1 is read the way the watcher reads it: events in `eth_getLogs` windows of at most
`log_window` blocks, and everything (batches, commits, messages) as of one head block, the
chain's `latest`, `safe` or `finalized` one (`head_tag`), so a verdict never rests on a block
that may still be reorged away. A challenge is signed here with the challenger's keystore
account and sent raw: the L1 node holds no key and sees no eth_sendTransaction."""

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from web3 import Web3

from l1_bridge.batches import build_batch
from l1_bridge.contracts import Deployment
from l1_bridge.watcher import DEFAULT_LOG_WINDOW, _message, log_windows, tagged_head
from node.core.replay import BlockData
from node.sdk.client import ApiError, Client
from rollup.chain import Chain
from rollup.codec import decode_action
from rollup.genesis import Genesis
from rollup.store import ChainStore
from stf.l1 import L1Message, next_l1_nonce

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

# Exit codes of `fedrollup verify` (documented in the README).
EXIT_OK = 0  # every committed batch replays to its committed output root
EXIT_WRONG_ROOT = 4  # a batch's data replays to another root (challenged with --challenge)
EXIT_WITHHELD = 5  # the node refuses (4xx) a committed batch's data (challenged with
# --challenge), or it is sealed (an open round's submissions: not challenged): cannot verify
EXIT_INCONCLUSIVE = 6  # the verifier's own trouble: node 5xx or unreachable, an answer it
# cannot decode, its own STF failing: never a reason to challenge


@dataclass
class VerifyReport:
    verified: list[int] = field(default_factory=list)
    wrong: list[dict[str, Any]] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # data not yet replayable (sealed submissions)
    withheld: list[dict[str, Any]] = field(default_factory=list)
    inconclusive: list[dict[str, Any]] = field(default_factory=list)
    challenged: list[int] = field(default_factory=list)
    l1_head: dict[str, Any] = field(default_factory=dict)  # the tag and block L1 was read at

    @property
    def verdict(self) -> str:
        if self.wrong:
            return "wrong_root"
        if self.withheld:
            return "data_withheld"
        if self.inconclusive:
            return "inconclusive"
        return "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "exit_code": exit_code(self.verdict),
            "verified": self.verified,
            "wrong": self.wrong,
            "pending": self.pending,
            "withheld": self.withheld,
            "inconclusive": self.inconclusive,
            "challenged": self.challenged,
            "l1_head": self.l1_head,
            "ok": self.verdict == "ok",
        }


def exit_code(verdict: str) -> int:
    return {
        "ok": EXIT_OK,
        "wrong_root": EXIT_WRONG_ROOT,
        "data_withheld": EXIT_WITHHELD,
    }.get(verdict, EXIT_INCONCLUSIVE)


class _Withheld(Exception):
    """The node does not hand over a committed batch's data (4xx, or sealed actions)."""


class _Inconclusive(Exception):
    """The verifier could not reach a verdict for reasons of its own or the transport's."""


class Verifier:
    def __init__(
        self,
        node_url: str,
        w3: Web3,
        deployment: Deployment,
        genesis: Genesis,
        workdir: Path,
        log_window: int = DEFAULT_LOG_WINDOW,
        head_tag: str = "latest",
    ) -> None:
        if log_window < 1:
            raise ValueError("log_window must be at least one block")
        self.client = Client(node_url, timeout=120)
        self.w3 = w3
        self.log_window = log_window
        self.head_tag = head_tag
        self.head = 0  # the L1 block everything is read at, set by run()
        self.deployment = deployment
        self.store = ChainStore(workdir)
        self.chain = Chain(self.store, genesis)
        self.genesis = genesis
        self._l1_messages: dict[int, L1Message] | None = None
        self._consumed: dict[int, int] | None = None

    def committed_consumed(self, index: int) -> int | None:
        """What the live commit of batch `index` says it consumed (the last commit event)."""
        if self._consumed is None:
            logs = self._windowed_logs("BatchCommitted")
            self._consumed = {int(e.args.index): int(e.args.messagesConsumed) for e in logs}
        return self._consumed.get(index)

    def l1_message(self, nonce: int) -> L1Message | None:
        if self._l1_messages is None:
            logs = self._windowed_logs("MessageSent")
            self._l1_messages = {int(e.args.nonce): _message(e) for e in logs}
        return self._l1_messages.get(nonce)

    def _windowed_logs(self, event_name: str) -> list[Any]:
        """The inbox's `event_name` logs from the deployment block to the head, window by window."""
        logs: list[Any] = []
        for first, last in log_windows(self.deployment.block_number, self.head, self.log_window):
            logs += self.get_logs(event_name, first, last)
        return logs

    def get_logs(self, event_name: str, first: int, last: int) -> list[Any]:
        """One bounded eth_getLogs call."""
        event = getattr(self.deployment.inbox.events, event_name)()
        return list(event.get_logs(from_block=first, to_block=last))

    def run(self, challenger: "LocalAccount | None") -> VerifyReport:
        report = VerifyReport()
        self.head = tagged_head(self.w3, self.head_tag)
        report.l1_head = {"tag": self.head_tag, "block": self.head}
        if self.head < self.deployment.block_number:  # the tagged block predates the contracts
            return report
        inbox = self.deployment.inbox.functions
        for index in range(int(inbox.nextBatchIndex().call(block_identifier=self.head))):
            try:
                committed = bytes(inbox.committedOutputRoot(index).call(block_identifier=self.head))
                computed, why = self._replay_batch(index)
            except _NotYet as exc:
                report.pending.append(index)
                report.withheld.append({"index": index, "why": str(exc)})
                break
            except _Withheld as exc:
                # L1 holds a root whose data the node will not hand over: unverifiable, so it
                # is challenged like a wrong one (sealed data above is the node's own rule).
                report.withheld.append({"index": index, "why": str(exc)})
                self._challenge(index, challenger, report)
                break
            except Exception as exc:  # its own error is never evidence against the node
                why = f"{type(exc).__name__}: {exc}"
                report.inconclusive.append({"index": index, "why": why})
                break
            if computed == committed:
                consumed = self.committed_consumed(index)
                replayed = next_l1_nonce(_StateReader(self.store))
                if consumed == replayed:
                    report.verified.append(index)
                    continue
                why = f"the commit says {consumed} L1 messages consumed; the replay, {replayed}"
            report.wrong.append(
                {
                    "index": index,
                    "committed": "0x" + committed.hex(),
                    "computed": None if computed is None else "0x" + computed.hex(),
                    "why": why,
                }
            )
            self._challenge(index, challenger, report)
            break  # later batches build on this one
        return report

    def _challenge(
        self, index: int, challenger: "LocalAccount | None", report: VerifyReport
    ) -> None:
        from l1_bridge.keystore import send_signed

        inbox = self.deployment.inbox.functions
        if challenger is not None and not bool(inbox.isFinalized(index).call()):
            send_signed(self.w3, challenger, inbox.challenge(index))
            report.challenged.append(index)

    def _replay_batch(self, index: int) -> tuple[bytes | None, str]:
        inbox = self.deployment.inbox.functions
        try:
            batch = self.client._get(f"/v1/batches/{index}?full=1")
        except ApiError as exc:
            # A pruning node drops data once final; withholding an open batch is challenged.
            if exc.status == 410 and bool(inbox.isFinalized(index).call()):
                why = f"data unavailable: the node pruned it ({exc.detail})"
                raise _Inconclusive(why) from None
            if 400 <= exc.status < 500 and exc.status not in (408, 429):
                why = f"the node serves no data for it ({exc.status} {exc.code})"
                raise _Withheld(why) from None
            raise _Inconclusive(f"the node failed to answer ({exc.status} {exc.code})") from None
        records = []
        for b in batch["blocks"]:
            if any(a is None for a in b["actions"]):
                raise _NotYet(f"block {b['height']} holds sealed submissions of an open round")
            data = BlockData.from_json(b)
            messages = [L1Message.decode(m) for m in data.l1_messages]
            for msg in messages:
                if self.l1_message(msg.nonce) != msg:
                    missing = f"L1 message {msg.nonce}, which L1 does not hold"
                    return None, f"block {data.height} includes {missing}"
            actions = [decode_action(w, self.genesis.chain_id) for w in data.actions]
            executed = self.chain.execute(actions, data.timestamp_ms, messages, data.l1_origin)
            if executed.record.header.hash() != data.expected_hash:
                return None, f"block {data.height} does not replay to the hash the node serves"
            self.chain.commit(executed, 0)
            records.append(executed.record)
        prev = bytes.fromhex(batch["prev_output_root"][2:])
        dep = self.deployment
        built = build_batch(index, prev, records, dep.chain_id, dep.addresses["RollupInbox"])
        return built.output_root, "output root differs from the replay"

    def close(self) -> None:
        self.store.close()


class _NotYet(_Withheld):
    """Sealed submissions of a round still open: withheld, by the node's sealing rule."""


class _StateReader:
    def __init__(self, store: ChainStore) -> None:
        self.store = store

    def get(self, key: bytes) -> bytes | None:
        return self.store.live.state(key)

    def put(self, key: bytes, value: bytes) -> None:
        raise AssertionError("read only")

    def delete(self, key: bytes) -> None:
        raise AssertionError("read only")


class NotChallenger(ValueError):
    """The challenger keystore's account does not hold the inbox's CHALLENGER_ROLE."""


def check_challenger(deployment: Deployment, address: str) -> None:
    inbox = deployment.inbox.functions
    role = inbox.CHALLENGER_ROLE().call()
    if not bool(inbox.hasRole(role, address).call()):
        raise NotChallenger(f"{address} does not hold the inbox's CHALLENGER_ROLE")


def verify(
    node_url: str,
    l1_rpc: str | None,
    deployment_file: Path | None,
    genesis: Genesis,
    challenger: "LocalAccount | None",
    log_window: int = DEFAULT_LOG_WINDOW,
    head_tag: str = "latest",
) -> dict[str, Any]:
    """Replay and check every committed batch; challenge a wrong one when `challenger` (a
    keystore account with CHALLENGER_ROLE) is given."""
    from node.sdk.wallet import connect

    if deployment_file is None:
        w3, deployment = connect(node_url, l1_rpc)
    else:
        w3 = Web3(Web3.HTTPProvider(l1_rpc or node_url.rstrip("/") + "/l1"))
        deployment = Deployment.from_json(w3, deployment_file.read_text())
    if challenger is not None:
        check_challenger(deployment, challenger.address)
    with tempfile.TemporaryDirectory(prefix="fedrollup-verify-") as tmp:
        verifier = Verifier(node_url, w3, deployment, genesis, Path(tmp), log_window, head_tag)
        try:
            return verifier.run(challenger).to_json()
        finally:
            verifier.close()
