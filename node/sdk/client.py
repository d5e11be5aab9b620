"""A small synchronous Python client for the node's HTTP API (stdlib only).

client = Client("http://127.0.0.1:8080")
tx = client.send(key, "transfer", Transfer(to=bob, amount=10**18))
receipt = client.wait(tx)
"""

import json
import os
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
from nacl.public import PrivateKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

from rollup.codec import encode_action
from rollup.smt import SmtProof, verify_proof
from stf.actions import Propose, terms_to_tuple
from stf.identity import BindL1
from stf.jobs import (
    AggregateRound,
    Amount,
    CommitParams,
    JobTerms,
    RevealParams,
    Withdraw,
    compute_commitment,
)
from stf.models import Approve, PostMessage, ProposalRef, SetPrice, Upload
from stf.staking import Unstake

Arch = tuple[tuple[str, tuple[int, ...]], ...]

SUCCESS_STATUSES = ("executed", "committed", "finalized")  # executed, then on L1, then final
FINAL_STATUSES = (*SUCCESS_STATUSES, "failed")


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"HTTP {status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


def retry_after_s(header: str | None, default: float = 1.0, cap: float = 30.0) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds; an HTTP date, or nothing,
    gives `default`), capped."""
    try:
        seconds = float(header) if header is not None else default
    except ValueError:
        seconds = default
    return min(max(seconds, 0.0), cap)


class _Unavailable(Exception):
    def __init__(self, error: ApiError, retry_after: str | None) -> None:
        self.error = error
        self.retry_after = retry_after


def _api_error(status: int, payload: bytes) -> ApiError:
    try:
        err = json.loads(payload)
        return ApiError(status, str(err["error"]), str(err["detail"]))
    except (ValueError, KeyError, TypeError):
        return ApiError(status, "http_error", payload[:200].decode(errors="replace"))


class Client:
    """`retries`: how often a `503` (the node is busy or overloaded: it accepted nothing) is
    retried, after its `Retry-After` plus up to 10 % jitter, before ApiError is raised."""

    def __init__(
        self, url: str = "http://127.0.0.1:8080", timeout: float = 30.0, retries: int = 5
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self._chain_id: int | None = None

    def _request(self, method: str, path: str, body: bytes | None = None) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return self._request_once(method, path, body)
            except _Unavailable as exc:
                if attempt == self.retries:
                    raise exc.error from None
                wait = retry_after_s(exc.retry_after)
                time.sleep(wait * (1 + 0.1 * random.random()))
        raise AssertionError("unreachable")

    def _request_once(self, method: str, path: str, body: bytes | None) -> Any:
        headers = {"Content-Type": "application/msgpack"} if body is not None else {}
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            if exc.code == 503:
                raise _Unavailable(
                    _api_error(exc.code, payload), exc.headers.get("Retry-After")
                ) from None
            raise _api_error(exc.code, payload) from None

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/v1/health")
        return result

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.health()["chain_id"])
        return self._chain_id

    def account(self, pubkey: bytes) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/accounts/0x{pubkey.hex()}")
        return result

    def state_proof(self, key: bytes) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/state/0x{key.hex()}/proof")
        return result

    def block(self, ref: int | str = "latest", full: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "GET", f"/v1/blocks/{ref}" + ("?full=1" if full else "")
        )
        return result

    def action(self, action_hash: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/actions/{action_hash}")
        return result

    def submit(self, wire: bytes) -> str:
        return str(self._request("POST", "/v1/actions", wire)["hash"])

    def submit_batch(self, wires: list[bytes]) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", "/v1/actions/batch", msgpack.packb(wires, use_bin_type=True)
        )
        return result

    def send(
        self, key: SigningKey, action_type: str, payload: Any, nonce: int | None = None
    ) -> str:
        """Sign with the sender's next nonce (asked from the node unless given) and submit."""
        if nonce is None:
            nonce = int(self.account(bytes(key.verify_key))["next_nonce"])
        return self.submit(encode_action(key, self.chain_id, action_type, nonce, payload))

    def _get(self, path: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", path)
        return result

    def _get_bytes(self, path: str) -> bytes:
        req = urllib.request.Request(self.url + path, method="GET")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            err = json.loads(exc.read())
            raise ApiError(exc.code, str(err["error"]), str(err["detail"])) from None

    def execute(
        self, key: SigningKey, action_type: str, payload: Any, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Send and wait for execution; raises ApiError if the receipt is a failure."""
        status = self.wait(self.send(key, action_type, payload), timeout=timeout)
        if status["status"] not in SUCCESS_STATUSES:
            receipt = status["receipt"]
            raise ApiError(200, str(receipt["error"]), str(receipt["detail"]))
        return status

    # -- federated-learning actions (each returns the action hash; see execute() to wait) --

    def upload(
        self,
        key: SigningKey,
        model_id: str,
        arch: Arch,
        params: npt.NDArray[np.float32],
        frac_bits: int = 16,
        price: int = 0,
        artifact: bytes = b"",
    ) -> str:
        wire = np.asarray(params, dtype="<f4").tobytes()
        return self.send(key, "upload", Upload(model_id, arch, wire, frac_bits, price, artifact))

    def set_price(self, key: SigningKey, model_id: str, price: int) -> str:
        return self.send(key, "set_price", SetPrice(model_id, price))

    def propose_access(
        self, key: SigningKey, model_id: str, price: int, expiry_blocks: int = 1000
    ) -> str:
        return self.send(key, "propose", Propose("access", model_id, price, expiry_blocks, None))

    def propose_train(self, key: SigningKey, model_id: str, pool: int, terms: JobTerms) -> str:
        return self.send(key, "propose", Propose("train", model_id, pool, 0, terms_to_tuple(terms)))

    def approve(self, key: SigningKey, proposal_id: int, buyer: bytes, artifact_key: bytes) -> str:
        """Approve an access proposal, posting the artifact key sealed to the buyer."""
        return self.send(key, "approve", Approve(proposal_id, seal_to(buyer, artifact_key)))

    def reject(self, key: SigningKey, proposal_id: int) -> str:
        return self.send(key, "reject", ProposalRef(proposal_id))

    def cancel(self, key: SigningKey, proposal_id: int) -> str:
        return self.send(key, "cancel", ProposalRef(proposal_id))

    def message(self, key: SigningKey, proposal_id: int, text: str) -> str:
        return self.send(key, "message", PostMessage(proposal_id, text))

    def stake(self, key: SigningKey, amount: int) -> str:
        """The L2 path to a stake is gone (it always fails `stake_on_l1`): stake on L1 from the
        key's bound address (`node.sdk.wallet.stake`)."""
        return self.send(key, "stake", Amount(amount))

    def bind_l1(self, key: SigningKey, address: str) -> str:
        """Name this key's L1 address (once): where its rewards, stake releases and withdrawals
        are paid, and the only L1 sender whose stakes and deposits count for it."""
        return self.send(key, "bind_l1", BindL1(bytes.fromhex(address.removeprefix("0x"))))

    def unstake(self, key: SigningKey, amount: int = 0) -> str:
        """Release stake (0 = all) to the bound address: a STAKE_RELEASE record paid on L1 once
        final; refused while the key has a submission in an open round."""
        return self.send(key, "unstake", Unstake(amount))

    def withdraw(self, key: SigningKey, amount: int, recipient: str | None = None) -> str:
        """A withdrawal record paid on L1 to `recipient` (0x address), or by default to the
        address this key bound with `bind_l1`."""
        to = b"" if recipient is None else bytes.fromhex(recipient.removeprefix("0x"))
        return self.send(key, "withdraw", Withdraw(amount, to))

    def commit_params(
        self,
        key: SigningKey,
        job_id: int,
        round_: int,
        params: npt.NDArray[np.float32],
        samples: int,
    ) -> tuple[str, "PendingReveal"]:
        """Commit to parameters (a fresh random salt hides them); keep the PendingReveal to
        reveal once the round's commits close (`reveal_params`)."""
        pending = PendingReveal(
            job_id, round_, np.asarray(params, dtype="<f4").tobytes(), samples, os.urandom(32)
        )
        commitment = compute_commitment(
            job_id, round_, bytes(key.verify_key), pending.params, samples, pending.salt
        )
        return self.send(key, "commit", CommitParams(job_id, round_, commitment)), pending

    def reveal_params(self, key: SigningKey, pending: "PendingReveal") -> str:
        return self.send(
            key,
            "reveal",
            RevealParams(
                pending.job_id, pending.round, pending.params, pending.samples, pending.salt
            ),
        )

    def aggregate(self, key: SigningKey, job_id: int, round_: int, accuracy_bp: int = 0) -> str:
        return self.send(key, "aggregate", AggregateRound(job_id, round_, accuracy_bp))

    # -- federated-learning reads --

    def models(self, after: str | None = None, limit: int = 100) -> dict[str, Any]:
        return self._get(f"/v1/models?limit={limit}" + (f"&after={after}" if after else ""))

    def model(self, model_id: str) -> dict[str, Any]:
        return self._get(f"/v1/models/{model_id}")

    def model_params(self, model_id: str) -> npt.NDArray[np.float32]:
        return np.frombuffer(
            self._get_bytes(f"/v1/models/{model_id}/params?format=f32"), dtype="<f4"
        ).copy()

    def access(self, model_id: str, buyer: bytes) -> dict[str, Any]:
        return self._get(f"/v1/models/{model_id}/access/0x{buyer.hex()}")

    def blob(self, digest: str) -> bytes:
        return self._get_bytes(f"/v1/blobs/{digest}")

    def proposal(self, proposal_id: int) -> dict[str, Any]:
        return self._get(f"/v1/proposals/{proposal_id}")

    def messages(self, proposal_id: int) -> list[dict[str, Any]]:
        return list(self._get(f"/v1/proposals/{proposal_id}/messages")["messages"])

    def job(self, job_id: int) -> dict[str, Any]:
        return self._get(f"/v1/jobs/{job_id}")

    def round(self, job_id: int, round_: int) -> dict[str, Any]:
        return self._get(f"/v1/jobs/{job_id}/rounds/{round_}")

    def global_params(self, job_id: int, round_: int) -> npt.NDArray[np.float32]:
        """The global model after `round_` (0 = the job's starting model), as float32."""
        raw = self._get_bytes(f"/v1/jobs/{job_id}/rounds/{round_}/global?format=f32")
        return np.frombuffer(raw, dtype="<f4").copy()

    def stake_of(self, pubkey: bytes) -> int:
        return int(self._get(f"/v1/stakes/0x{pubkey.hex()}")["stake"])

    def wait(self, action_hash: str, timeout: float = 30.0, poll: float = 0.05) -> dict[str, Any]:
        """Wait until the action is executed or failed; returns its status with the receipt."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.action(action_hash)
            if status["status"] in FINAL_STATUSES:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"action {action_hash} still {status['status']} after {timeout}s"
                )
            time.sleep(poll)


def verify_state_read(read: dict[str, Any], expected_root: bytes | None = None) -> bool:
    """Check a state/account read's proof against its root (or a root the caller trusts)."""
    root = bytes.fromhex(read["state_root"][2:])
    if expected_root is not None and root != expected_root:
        return False
    key = bytes.fromhex(read["state_key"][2:])
    value = None if read["value"] is None else bytes.fromhex(read["value"][2:])
    try:
        proof = SmtProof.from_json(read["proof"])
    except ValueError:
        return False
    return proof.key == key and verify_proof(root, key, value, proof)


def seal_to(recipient: bytes, secret: bytes) -> bytes:
    """Seal a secret to an ed25519 public key (its X25519 form), as approvals do."""
    return bytes(SealedBox(VerifyKey(recipient).to_curve25519_public_key()).encrypt(secret))


@dataclass(frozen=True)
class PendingReveal:
    """What a participant must keep between its commitment and its reveal."""

    job_id: int
    round: int
    params: bytes  # float32 little-endian, exactly as committed
    samples: int
    salt: bytes


def open_sealed(key: SigningKey, sealed: bytes) -> bytes:
    """Open a secret sealed to this key with seal_to()."""
    private: PrivateKey = key.to_curve25519_private_key()
    return bytes(SealedBox(private).decrypt(sealed))


def event(status: dict[str, Any], name: str) -> dict[str, Any]:
    """The data of the first event of this name in an action status's receipt."""
    for ev in status["receipt"]["events"]:
        if ev["name"] == name:
            data: dict[str, Any] = ev["data"]
            return data
    raise KeyError(name)
