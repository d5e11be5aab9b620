"""Packaging and the command line's conventions: --version, `python -m node`, declared and
exactly pinned dependencies, py.typed, LICENSE/CHANGELOG, the train extra kept off the
node's import path with a clear message when it is missing, configuration typos refused,
JSON logs."""

import ast
import json
import os
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from node.cli_util import free_port
from tests.conftest import ROOT, NodeProcess

PACKAGES = ("stf", "rollup", "l1_bridge", "node")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TRAIN_ONLY = {"torch", "sklearn", "matplotlib", "rich"}
# the node server and its tools: none of these may import a train-extra module
SERVER_MODULES = [
    "node.server.app", "node.ops.cli", "node.core.service", "node.core.l1_service",
    "node.sdk.client", "node.sdk.wallet", "node.ops.verify", "node.core.replay",
    "node.bench.bench_ingest", "node.bench.bench_krum", "node.metrics",
    "l1_bridge.gasbench",
]  # fmt: skip


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _requirement_name(req: str) -> str:
    name = req.split("==")[0].split("[")[0].split(";")[0].strip()
    return name.lower().replace("_", "-")


def test_version_and_python_dash_m_node() -> None:
    out = _run("-m", "node", "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"fedrollup {PYPROJECT['project']['version']}"
    helped = _run("-m", "node", "--help")
    assert helped.returncode == 0 and "usage: fedrollup" in helped.stdout


def test_every_dependency_is_pinned_exactly() -> None:
    project = PYPROJECT["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    for req in reqs:
        spec = req.split(";")[0]
        assert spec.count("==") == 1 and not any(c in spec for c in "<>~!*"), req


def _third_party_imports() -> dict[str, set[str]]:
    """top-level module -> the files importing it (outside the standard library)."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_distribution_is_declared() -> None:
    project = PYPROJECT["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    train = {_requirement_name(r) for r in project["optional-dependencies"]["train"]}
    dists = packages_distributions()
    for module, files in _third_party_imports().items():
        names = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        assert names, f"{module} (imported by {sorted(files)}) comes from no installed package"
        declared = core | train if module in TRAIN_ONLY else core
        assert names & declared, f"{module} ({sorted(names)}) is imported but not declared"
    # rich and torch are in the train extra only
    assert not (core & {"rich", "torch", "scikit-learn", "matplotlib"})
    assert {"rich", "torch"} <= train


def test_the_node_does_not_import_the_train_extra() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {SERVER_MODULES!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(TRAIN_ONLY)!r})\n"
        "print(bad)\n"
    )
    out = _run("-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_train_demo_experiment_without_the_extra_say_what_to_install(tmp_path: Path) -> None:
    commands = {
        "train": ["train", "--job", "1", "--key", "k.json", "--data", "digits:0/2"],
        "demo": ["demo"],
        "experiment": ["experiment"],
    }
    for name, argv in commands.items():
        # as if the extra were not installed: importing these modules fails
        code = (
            "import sys\n"
            "for m in ('torch', 'sklearn', 'matplotlib', 'rich'): sys.modules[m] = None\n"
            "from node.ops.cli import main\n"
            f"sys.exit(main({argv!r}))\n"
        )
        out = _run("-c", code)
        assert out.returncode == 2, (name, out.stderr)
        assert "pip install 'fedrollup[train]'" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_py_typed_license_changelog() -> None:
    for package in PACKAGES:
        assert (ROOT / package / "py.typed").is_file(), package
        data = PYPROJECT["tool"]["setuptools"]["package-data"][package]
        assert "py.typed" in data, package
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text  # the full text, not a stub
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {PYPROJECT['project']['version']}" in changelog


def test_a_typo_in_the_environment_stops_the_node_with_a_clear_message(tmp_path: Path) -> None:
    for env_extra, needle in (
        ({"FEDROLLUP_PROT": "9000"}, "FEDROLLUP_PROT"),
        ({"FEDROLLUP_KEEPER": "ture"}, "keeper: expected a boolean"),
    ):
        env = {**os.environ, **env_extra}
        out = _run(
            "-m", "node", "run", "--data-dir", str(tmp_path / "d"), "--port", str(free_port()),
            "--l1", "none", env=env,
        )  # fmt: skip
        assert out.returncode == 2, out.stderr
        assert needle in out.stderr and "configuration error" in out.stderr
        assert "Traceback" not in out.stderr


def test_json_log_format(tmp_path: Path, node_factory: type[NodeProcess]) -> None:
    node = node_factory(
        tmp_path / "data", free_port(), ["--l1", "none", "--log-format", "json"]
    ).start()
    records = [json.loads(line) for line in node.log().splitlines() if line.startswith("{")]
    assert records, node.log()
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    assert any("event loop uvloop.Loop" in r["message"] for r in records)


# node's rooms, lowest first: a module may import its own room and the rooms before it only.
NODE_LAYERS = ("", "sdk", "core", "server", "participant", "bench", "ops")


def _node_room(module: str) -> str:
    if module == "node.__main__":  # `python -m node`: the command line's entry point
        return "ops"
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in NODE_LAYERS else ""


def _imported_modules(path: Path) -> set[str]:
    """Every module imported by the file, at any depth (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_imports_inside_node_go_one_way() -> None:
    """foundations <- sdk <- core <- server <- participant <- bench <- ops: no room imports a
    later one, so the server never depends on the participant's side, and there is no circle."""
    wrong = []
    for path in sorted((ROOT / "node").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        own = NODE_LAYERS.index(_node_room(module))
        for imported in _imported_modules(path):
            if not imported.startswith("node."):
                continue
            room = _node_room(imported)
            if NODE_LAYERS.index(room) > own:
                wrong.append(f"{module} imports {imported}")
    assert not wrong, wrong
    assert all((ROOT / "node" / room / "__init__.py").is_file() for room in NODE_LAYERS[1:])
