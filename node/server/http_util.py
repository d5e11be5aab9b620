"""Request parsing shared by the views: strict hex and integers, and the app's node key."""

import re

from aiohttp import web

from node.core.door import Rejected
from node.core.service import Node

NODE: web.AppKey[Node] = web.AppKey("node", Node)
_HEX = re.compile(r"^0[xX](?:[0-9a-fA-F]{2})*$")
_UINT = re.compile(r"^[0-9]{1,19}$")


def parse_hex(
    text: str, *, size: int | None = None, what: str = "value", max_size: int = 1024
) -> bytes:
    """Strict 0x-hex: ASCII hex digits only (no spaces, no signs), even length."""
    if not _HEX.match(text) or len(text) > 2 + 2 * max_size:
        raise Rejected(400, "bad_hex", f"{what} must be 0x-prefixed hex")
    raw = bytes.fromhex(text[2:])
    if size is not None and len(raw) != size:
        raise Rejected(400, "bad_hex", f"{what} must be {size} bytes")
    return raw


def parse_uint(text: str, what: str, code: str = "bad_number") -> int:
    """ASCII decimal digits only: str.isdigit() would accept '²' and full-width digits."""
    if not _UINT.match(text):
        raise Rejected(400, code, f"{what} must be a non-negative integer")
    return int(text)
