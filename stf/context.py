"""What an action sees besides state: who sent it, in which block, and where its events go."""

from dataclasses import dataclass, field
from typing import Any

from stf.settlement import SettlementRecord

Event = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class BlockInfo:
    chain_id: int
    height: int
    timestamp_ms: int


@dataclass(frozen=True)
class Action:
    """A decoded, signature-checked action. `payload` is the action type's payload dataclass."""

    type: str
    sender: bytes
    nonce: int
    payload: Any
    hash: bytes


@dataclass
class Effects:
    """Outputs of one action besides state writes; dropped when the action fails."""

    events: list[Event] = field(default_factory=list)
    records: list[SettlementRecord] = field(default_factory=list)

    def emit(self, name: str, **data: Any) -> None:
        self.events.append((name, data))
