"""A small synchronous Python client for the node's HTTP API (stdlib only).

client = Client("http://127.0.0.1:8080")
tx = client.send(key, "transfer", Transfer(to=bob, amount=10**18))
receipt = client.wait(tx)
"""

import json
import time
import urllib.error
import urllib.request
from typing import Any

import msgpack
from nacl.signing import SigningKey

from rollup.codec import encode_action
from rollup.smt import SmtProof, verify_proof

FINAL_STATUSES = ("executed", "failed")


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"HTTP {status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8080", timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._chain_id: int | None = None

    def _request(self, method: str, path: str, body: bytes | None = None) -> Any:
        headers = {"Content-Type": "application/msgpack"} if body is not None else {}
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                err = json.loads(payload)
                raise ApiError(exc.code, str(err["error"]), str(err["detail"])) from None
            except (ValueError, KeyError, TypeError):
                raise ApiError(
                    exc.code, "http_error", payload[:200].decode(errors="replace")
                ) from None

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
