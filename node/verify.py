"""`fedrollup verify`: an independent verifier. It trusts only the genesis, L1, and the
signatures on the actions; it replays every committed batch from the node's batch data,
checks each L1 message the node claims against the inbox's own events, recomputes the
output root, checks the count of L1 messages the commit says the batch consumed (forced
inclusion) against the replayed state, and challenges a batch whose committed root or count
is wrong while its window is open. Resolution is by the guardian (see the trust model in the
README)."""

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from web3 import Web3

from l1_bridge.batches import build_batch
from l1_bridge.contracts import Deployment
from l1_bridge.watcher import _message
from node.client import ApiError, Client
from node.replay import BlockData
from rollup.chain import Chain
from rollup.codec import decode_action
from rollup.genesis import Genesis
from rollup.store import ChainStore
from stf.l1 import L1Message, next_l1_nonce


@dataclass
class VerifyReport:
    verified: list[int] = field(default_factory=list)
    wrong: list[dict[str, Any]] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # data not yet replayable (sealed submissions)
    challenged: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "wrong": self.wrong,
            "pending": self.pending,
            "challenged": self.challenged,
            "ok": not self.wrong,
        }


class Verifier:
    def __init__(
        self, node_url: str, w3: Web3, deployment: Deployment, genesis: Genesis, workdir: Path
    ) -> None:
        self.client = Client(node_url, timeout=120)
        self.w3 = w3
        self.deployment = deployment
        self.store = ChainStore(workdir)
        self.chain = Chain(self.store, genesis)
        self.genesis = genesis
        self._l1_messages: dict[int, L1Message] | None = None
        self._consumed: dict[int, int] | None = None

    def committed_consumed(self, index: int) -> int | None:
        """What the live commit of batch `index` says it consumed (the last commit event)."""
        if self._consumed is None:
            logs = self.deployment.inbox.events.BatchCommitted().get_logs(
                from_block=self.deployment.block_number
            )
            self._consumed = {int(e.args.index): int(e.args.messagesConsumed) for e in logs}
        return self._consumed.get(index)

    def l1_message(self, nonce: int) -> L1Message | None:
        if self._l1_messages is None:
            logs = self.deployment.inbox.events.MessageSent().get_logs(
                from_block=self.deployment.block_number
            )
            self._l1_messages = {int(e.args.nonce): _message(e) for e in logs}
        return self._l1_messages.get(nonce)

    def run(self, challenger: str | None) -> VerifyReport:
        report = VerifyReport()
        inbox = self.deployment.inbox.functions
        for index in range(int(inbox.nextBatchIndex().call())):
            committed = bytes(inbox.committedOutputRoot(index).call())
            try:
                computed, why = self._replay_batch(index)
            except _NotYet:
                report.pending.append(index)
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
            if challenger is not None and not bool(inbox.isFinalized(index).call()):
                tx = self.deployment.inbox.functions.challenge(index).transact({"from": challenger})
                self.w3.eth.wait_for_transaction_receipt(tx)
                report.challenged.append(index)
            break  # later batches build on this one
        return report

    def _replay_batch(self, index: int) -> tuple[bytes | None, str]:
        try:
            batch = self.client._get(f"/v1/batches/{index}?full=1")
        except ApiError as exc:
            return None, f"the node serves no data for it ({exc.code})"
        records = []
        for b in batch["blocks"]:
            if any(a is None for a in b["actions"]):
                raise _NotYet()
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


class _NotYet(Exception):
    pass


class _StateReader:
    def __init__(self, store: ChainStore) -> None:
        self.store = store

    def get(self, key: bytes) -> bytes | None:
        return self.store.live.state(key)

    def put(self, key: bytes, value: bytes) -> None:
        raise AssertionError("read only")

    def delete(self, key: bytes) -> None:
        raise AssertionError("read only")


def verify(
    node_url: str,
    l1_rpc: str | None,
    deployment_file: Path | None,
    genesis: Genesis,
    challenger: str | None,
    challenge: bool,
) -> dict[str, Any]:
    from node.wallet import connect

    if deployment_file is None:
        w3, deployment = connect(node_url, l1_rpc)
    else:
        w3 = Web3(Web3.HTTPProvider(l1_rpc or node_url.rstrip("/") + "/l1"))
        deployment = Deployment.from_json(w3, deployment_file.read_text())
    who = challenger or (deployment.params.challenger if challenge else None)
    with tempfile.TemporaryDirectory(prefix="fedrollup-verify-") as tmp:
        verifier = Verifier(node_url, w3, deployment, genesis, Path(tmp))
        try:
            return verifier.run(who if challenge else None).to_json()
        finally:
            verifier.close()
