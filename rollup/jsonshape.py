"""Typed JSON shapes: string and integer aliases that carry their JSON Schema keywords.

The API's answers are TypedDicts built from these aliases; `node.schema` reads the keywords
from the `Annotated` metadata to generate the API description, so the type checker and the
description see one definition."""

from dataclasses import dataclass
from typing import Annotated, Any


@dataclass(frozen=True)
class Keywords:
    """JSON Schema keywords for the annotated type (a hashable list of pairs)."""

    pairs: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.pairs}


def keywords(**kw: Any) -> Keywords:
    return Keywords(tuple(sorted(kw.items())))


def hex_pattern(size: int | None = None) -> str:
    """Lowercase 0x-hex, as `rollup.block.hexb` writes it; `size` in bytes if fixed."""
    return "^0x(?:[0-9a-f]{2})*$" if size is None else f"^0x[0-9a-f]{{{2 * size}}}$"


Hex = Annotated[str, keywords(pattern=hex_pattern(), description="bytes, 0x-hex")]
Hex32 = Annotated[str, keywords(pattern=hex_pattern(32), description="32 bytes, 0x-hex")]
Hex20 = Annotated[str, keywords(pattern=hex_pattern(20), description="20 bytes, 0x-hex")]
ChecksumAddress = Annotated[
    str, keywords(pattern="^0x[0-9a-fA-F]{40}$", description="EIP-55 checksummed L1 address")
]
# Wei amounts and other integers beyond JSON's safe range travel as decimal strings.
DecimalString = Annotated[
    str, keywords(pattern="^(?:0|[1-9][0-9]*)$", description="non-negative integer, decimal")
]
Uint = Annotated[int, keywords(minimum=0)]
