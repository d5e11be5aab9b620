"""Fail-stop: what the node does when the STF raises anything but InvalidAction.

The block that held the action is not committed; the node writes `HALTED.json` in its data
dir (which action, which error), counts `fedrollup_stf_halts_total`, logs the action hash and
exits with HALT_EXIT_CODE. A restart finds the file and refuses to start, naming the action,
instead of re-executing it (the action is still in the mempool log: it was never executed).
Remove the file once the software is fixed, to let the node try the action again."""

import json
import os
from pathlib import Path
from typing import Any

from rollup.chain import StfHalt

HALT_FILE = "HALTED.json"
HALT_EXIT_CODE = 70  # EX_SOFTWARE


def halt_path(data_dir: Path) -> Path:
    return Path(data_dir) / HALT_FILE


def record_halt(data_dir: Path, halt: StfHalt, height: int) -> dict[str, Any]:
    info = {
        "kind": halt.kind,
        "hash": "0x" + halt.subject.hex(),
        "height": height,
        "error": f"{type(halt.cause).__name__}: {halt.cause}",
    }
    write_json_durably(halt_path(data_dir), info)
    return info


def write_json_durably(path: Path, info: dict[str, Any]) -> None:
    """Write a stop record whole or not at all: a temporary file, fsynced, then renamed."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        json.dump(info, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def read_halt(data_dir: Path) -> dict[str, Any] | None:
    path = halt_path(data_dir)
    if not path.exists():
        return None
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        info = {"kind": "action", "hash": "(unreadable)", "height": None, "error": "?"}
    return info


def refusal(data_dir: Path) -> str | None:
    """The message a restart prints instead of re-executing a poison action; None if none."""
    info = read_halt(data_dir)
    if info is None:
        return None
    return (
        f"refusing to start: {info.get('kind', 'action')} {info.get('hash')} stopped the STF "
        f"while building block {info.get('height')} ({info.get('error')}); nothing of that "
        f"block was committed. Fix the node software, then remove {halt_path(data_dir)} to "
        "execute it again."
    )
