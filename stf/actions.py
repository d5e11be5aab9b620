"""The action set: every action type's payload schema and its processing rule.

The rollup codec decodes envelopes; this table says what a payload of each type must look
like and which `process_*` function applies it. Later action families register here too.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stf import accounts
from stf.context import Action, BlockInfo, Effects
from stf.errors import InvalidAction
from stf.fields import Field, decode_fields, encode_fields, fixed_bytes, u256
from stf.state import KV

Processor = Callable[[KV, Action, BlockInfo, Effects], None]


@dataclass(frozen=True)
class ActionSpec:
    name: str
    fields: tuple[Field, ...]
    payload_type: type
    process: Processor
    max_body_bytes: int = 4096


ACTIONS: dict[str, ActionSpec] = {}


def register(spec: ActionSpec) -> None:
    if spec.name in ACTIONS:
        raise ValueError(f"action {spec.name!r} registered twice")
    ACTIONS[spec.name] = spec


register(
    ActionSpec(
        name="transfer",
        fields=(fixed_bytes("to", 32), u256("amount")),
        payload_type=accounts.Transfer,
        process=accounts.process_transfer,
    )
)


def get_spec(action_type: str) -> ActionSpec:
    spec = ACTIONS.get(action_type)
    if spec is None:
        raise InvalidAction("unknown_action", f"unknown action type {action_type!r}")
    return spec


def decode_payload(action_type: str, raw: Any) -> Any:
    spec = get_spec(action_type)
    return spec.payload_type(**decode_fields(spec.fields, raw))


def encode_payload(action_type: str, payload: Any) -> list[Any]:
    spec = get_spec(action_type)
    return encode_fields(spec.fields, {f.name: getattr(payload, f.name) for f in spec.fields})


def apply_action(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    """Apply one action's own effect (the nonce was already used by the caller)."""
    get_spec(action.type).process(state, action, block, effects)
