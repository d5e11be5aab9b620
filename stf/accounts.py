"""Built-in account state: a nonce and an L2 balance (wei) per ed25519 public key."""

from dataclasses import dataclass

from stf.context import Action, BlockInfo, Effects
from stf.errors import InvalidAction
from stf.fields import MAX_U64, MAX_U256
from stf.state import KV

ACCOUNT_PREFIX = b"acct/"
_NONCE_BYTES = 8
_BALANCE_BYTES = 32
_RECORD_BYTES = _NONCE_BYTES + _BALANCE_BYTES


@dataclass(frozen=True)
class Account:
    nonce: int
    balance: int


EMPTY_ACCOUNT = Account(nonce=0, balance=0)


def account_key(pubkey: bytes) -> bytes:
    return ACCOUNT_PREFIX + pubkey


def encode_account(account: Account) -> bytes:
    return account.nonce.to_bytes(_NONCE_BYTES, "big") + account.balance.to_bytes(
        _BALANCE_BYTES, "big"
    )


def decode_account(raw: bytes) -> Account:
    return Account(*_fields(raw))


def _fields(raw: bytes) -> tuple[int, int]:
    if len(raw) != _RECORD_BYTES:
        raise ValueError("corrupt account record")
    return int.from_bytes(raw[:_NONCE_BYTES], "big"), int.from_bytes(raw[_NONCE_BYTES:], "big")


def get_account(state: KV, pubkey: bytes) -> Account:
    raw = state.get(account_key(pubkey))
    return EMPTY_ACCOUNT if raw is None else decode_account(raw)


def set_account(state: KV, pubkey: bytes, account: Account) -> None:
    state.put(account_key(pubkey), encode_account(account))


# The per-action paths below read and write (nonce, balance) pairs directly: the same bytes
# as through Account, without building one per read (a frozen dataclass is slow to make).
def _read(state: KV, pubkey: bytes) -> tuple[int, int]:
    raw = state.get(ACCOUNT_PREFIX + pubkey)
    return (0, 0) if raw is None else _fields(raw)


def _write(state: KV, pubkey: bytes, nonce: int, balance: int) -> None:
    state.put(
        ACCOUNT_PREFIX + pubkey,
        nonce.to_bytes(_NONCE_BYTES, "big") + balance.to_bytes(_BALANCE_BYTES, "big"),
    )


def use_nonce(state: KV, sender: bytes, nonce: int) -> None:
    """Strict nonces: the next action of a sender carries last + 1; nothing else executes."""
    last, balance = _read(state, sender)
    if nonce != last + 1:
        code = "nonce_replayed" if nonce <= last else "nonce_gap"
        raise InvalidAction(code, f"expected nonce {last + 1}, got {nonce}")
    if nonce > MAX_U64:
        raise InvalidAction("nonce_overflow", "nonce space exhausted")
    _write(state, sender, nonce, balance)


def credit(state: KV, pubkey: bytes, amount: int) -> None:
    nonce, balance = _read(state, pubkey)
    if balance + amount > MAX_U256:
        raise InvalidAction("balance_overflow", "credit would overflow uint256")
    _write(state, pubkey, nonce, balance + amount)


def debit(state: KV, pubkey: bytes, amount: int) -> None:
    nonce, balance = _read(state, pubkey)
    if balance < amount:
        raise InvalidAction("insufficient_balance", f"balance {balance} < amount {amount}")
    _write(state, pubkey, nonce, balance - amount)


@dataclass(frozen=True)
class Transfer:
    to: bytes
    amount: int


def process_transfer(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    payload: Transfer = action.payload
    if payload.amount == 0:
        raise InvalidAction("zero_amount", "a transfer moves a positive amount")
    debit(state, action.sender, payload.amount)
    credit(state, payload.to, payload.amount)
    effects.emit("Transfer", sender=action.sender, to=payload.to, amount=payload.amount)
