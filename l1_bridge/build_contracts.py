"""Compile the L1 contracts with the pinned npm ``solc`` (solcjs) and write deterministic artifacts.

Usage (from the repository root, after ``npm ci``)::

    python -m l1_bridge.build_contracts           # rebuild l1_bridge/artifacts/*.json
    python -m l1_bridge.build_contracts --check   # exit 1 if the committed artifacts are stale

The compiler input is Standard JSON with every source inlined (the project's
``l1_bridge/contracts/*.sol`` plus the OpenZeppelin files they import, resolved here
from ``node_modules``), so the output depends only on the source texts, the solc
version and :data:`SETTINGS`. Each artifact holds ``abi``, ``bytecode``,
``deployedBytecode``, ``compiler`` and ``settings``, written as JSON with sorted keys,
2-space indent and a trailing newline.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = REPO_ROOT / "l1_bridge" / "contracts"
ARTIFACTS_DIR = REPO_ROOT / "l1_bridge" / "artifacts"
NODE_MODULES = REPO_ROOT / "node_modules"
SOLCJS = NODE_MODULES / ".bin" / "solcjs"

#: Source unit name prefix of the project's contracts.
SOURCE_PREFIX = "l1_bridge/contracts/"

#: Contracts that get an artifact (the deployable ones).
CONTRACTS: tuple[str, ...] = (
    "RollupInbox",
    "StakingRegistry",
    "SlashingManager",
    "RewardManager",
    "SlashTreasury",
    "RewardTreasury",
)

#: Fixed compiler settings (besides outputSelection). Changing them changes the bytecode.
SETTINGS: dict[str, Any] = {
    "evmVersion": "prague",
    "metadata": {"bytecodeHash": "none"},
    "optimizer": {"enabled": True, "runs": 10_000},
    "viaIR": False,
}

_IMPORT_RE = re.compile(r"""^\s*import\s+(?:[^;]*?\s+from\s+)?["']([^"']+)["']\s*;""", re.MULTILINE)


class BuildError(RuntimeError):
    """The compiler could not be run or reported errors."""


def _resolve(importer: str, path: str) -> str:
    """Source unit name of ``path`` imported from unit ``importer`` (solc's rules)."""
    if not path.startswith("."):
        return path
    parts = importer.split("/")[:-1]
    for piece in path.split("/"):
        if piece == "..":
            if not parts:
                raise BuildError(f"import {path!r} escapes the source tree from {importer!r}")
            parts.pop()
        elif piece not in (".", ""):
            parts.append(piece)
    return "/".join(parts)


def _read_unit(name: str) -> str:
    file = REPO_ROOT / name if name.startswith(SOURCE_PREFIX) else NODE_MODULES / name
    if not file.is_file():
        raise BuildError(f"cannot find source {name!r} (looked at {file}); did you run `npm ci`?")
    return file.read_text(encoding="utf-8")


def collect_sources() -> dict[str, str]:
    """All source units (project contracts and their transitive imports), by unit name."""
    pending = [SOURCE_PREFIX + p.name for p in sorted(CONTRACTS_DIR.glob("*.sol"))]
    sources: dict[str, str] = {}
    while pending:
        name = pending.pop()
        if name in sources:
            continue
        text = _read_unit(name)
        sources[name] = text
        pending.extend(_resolve(name, imp) for imp in _IMPORT_RE.findall(text))
    return dict(sorted(sources.items()))


def compiler_version() -> str:
    """The solcjs version string, e.g. ``0.8.37+commit.f401782d.Emscripten.clang``."""
    if not SOLCJS.exists():
        raise BuildError(f"{SOLCJS} not found; run `npm ci` in {REPO_ROOT}")
    out = subprocess.run(
        [str(SOLCJS), "--version"], check=True, capture_output=True, text=True, cwd=REPO_ROOT
    )
    return out.stdout.strip()


def compile_standard_json(sources: dict[str, str]) -> dict[str, Any]:
    """Run solcjs on the sources; return the Standard JSON output (raises on errors)."""
    request = {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": {
            **SETTINGS,
            "outputSelection": {
                "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}
            },
        },
    }
    # solcjs reads stdin with a synchronous read (EAGAIN on a pipe) and exits before a piped stdout
    # is drained (truncated JSON): use files for both.
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8") as stdin,
        tempfile.TemporaryFile("w+", encoding="utf-8") as stdout,
    ):
        json.dump(request, stdin)
        stdin.seek(0)
        proc = subprocess.run(
            [str(SOLCJS), "--standard-json"],
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        stdout.seek(0)
        text = stdout.read()
    if proc.returncode != 0:
        raise BuildError(f"solcjs failed ({proc.returncode}): {proc.stderr.strip()}")
    # solcjs may print warnings before the JSON document.
    start = text.find("{")
    if start < 0:
        raise BuildError(f"solcjs printed no JSON: {text[:500]!r} {proc.stderr[:500]!r}")
    output: dict[str, Any] = json.loads(text[start:])
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise BuildError("\n".join(e.get("formattedMessage", str(e)) for e in errors))
    return output


def render(artifact: dict[str, Any]) -> str:
    """The canonical text of an artifact."""
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def build() -> dict[str, str]:
    """Compile; return ``{file name: canonical artifact text}`` for every contract in CONTRACTS."""
    sources = collect_sources()
    output = compile_standard_json(sources)
    version = compiler_version()
    result: dict[str, str] = {}
    for name in CONTRACTS:
        unit = f"{SOURCE_PREFIX}{name}.sol"
        try:
            compiled = output["contracts"][unit][name]
        except KeyError as exc:
            raise BuildError(f"no output for {unit}:{name}") from exc
        artifact = {
            "contractName": name,
            "sourceName": unit,
            "abi": compiled["abi"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
            "compiler": {"name": "solc", "version": version},
            "settings": SETTINGS,
        }
        result[f"{name}.json"] = render(artifact)
    return result


def stale_artifacts(built: dict[str, str]) -> list[str]:
    """File names in ARTIFACTS_DIR that differ from ``built`` (missing or extra files included)."""
    stale = []
    for file_name, text in built.items():
        path = ARTIFACTS_DIR / file_name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(file_name)
    for path in ARTIFACTS_DIR.glob("*.json"):
        if path.name not in built:
            stale.append(path.name)
    return sorted(stale)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the committed artifacts differ from a fresh build",
    )
    args = parser.parse_args(argv)
    try:
        built = build()
    except (BuildError, subprocess.CalledProcessError, OSError) as exc:
        print(f"build_contracts: {exc}", file=sys.stderr)
        return 2
    if args.check:
        stale = stale_artifacts(built)
        if stale:
            print(
                "build_contracts: stale artifacts (run `python -m l1_bridge.build_contracts`): "
                + ", ".join(stale),
                file=sys.stderr,
            )
            return 1
        print(f"build_contracts: {len(built)} artifacts up to date")
        return 0
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    for path in ARTIFACTS_DIR.glob("*.json"):
        if path.name not in built:
            path.unlink()
    for file_name, text in built.items():
        (ARTIFACTS_DIR / file_name).write_text(text, encoding="utf-8")
    print(f"build_contracts: wrote {len(built)} artifacts to {ARTIFACTS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
