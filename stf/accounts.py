"""Built-in account state: a nonce and an L2 balance (wei) per ed25519 public key."""

from dataclasses import dataclass

from stf.context import Action, BlockInfo, Effects
from stf.errors import InvalidAction
from stf.fields import MAX_U64, MAX_U256
from stf.state import KV

ACCOUNT_PREFIX = b"acct/"
_NONCE_BYTES = 8
_BALANCE_BYTES = 32


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
    if len(raw) != _NONCE_BYTES + _BALANCE_BYTES:
        raise ValueError("corrupt account record")
    return Account(
        nonce=int.from_bytes(raw[:_NONCE_BYTES], "big"),
        balance=int.from_bytes(raw[_NONCE_BYTES:], "big"),
    )


def get_account(state: KV, pubkey: bytes) -> Account:
    raw = state.get(account_key(pubkey))
    return EMPTY_ACCOUNT if raw is None else decode_account(raw)


def set_account(state: KV, pubkey: bytes, account: Account) -> None:
    state.put(account_key(pubkey), encode_account(account))


def use_nonce(state: KV, sender: bytes, nonce: int) -> None:
    """Strict nonces: the next action of a sender carries last + 1; nothing else executes."""
    account = get_account(state, sender)
    if nonce != account.nonce + 1:
        code = "nonce_replayed" if nonce <= account.nonce else "nonce_gap"
        raise InvalidAction(code, f"expected nonce {account.nonce + 1}, got {nonce}")
    if nonce > MAX_U64:
        raise InvalidAction("nonce_overflow", "nonce space exhausted")
    set_account(state, sender, Account(nonce, account.balance))


def credit(state: KV, pubkey: bytes, amount: int) -> None:
    account = get_account(state, pubkey)
    if account.balance + amount > MAX_U256:
        raise InvalidAction("balance_overflow", "credit would overflow uint256")
    set_account(state, pubkey, Account(account.nonce, account.balance + amount))


def debit(state: KV, pubkey: bytes, amount: int) -> None:
    account = get_account(state, pubkey)
    if account.balance < amount:
        raise InvalidAction("insufficient_balance", f"balance {account.balance} < amount {amount}")
    set_account(state, pubkey, Account(account.nonce, account.balance - amount))


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
