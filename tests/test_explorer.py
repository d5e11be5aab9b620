"""The live explorer (/explorer) in a real headless Chromium (Debian's /usr/bin/chromium,
driven by Playwright) against a real node with its embedded L1, while a short training job
runs over HTTP with honest participants, a sign-flipper (excluded) and a copier (slashed):
what the page shows must equal what the API answers, it must follow a new round without a
reload, and chain data holding markup must stay text."""

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from node.sdk.client import ApiError, Client, event
from node.server.explorer import ASSETS, CSP
from rollup.genesis import Genesis
from stf.actions import Propose, terms_to_tuple
from stf.models import PostMessage, Upload
from tests.conftest import ROOT, NodeProcess, free_port
from tests.fl_harness import ARCH, PARAMS, http_submit_round, key, pub
from tests.fl_harness import terms as harness_terms
from tests.test_fl_http import stake_on_l1_from_bound_wallets

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OWNER = 0
HONEST, FLIPPER, COPIER = list(range(1, 6)), 6, 7
CLIENTS = [*HONEST, FLIPPER, COPIER]
HOSTILE = (
    "<img src=x onerror=\"document.title='pwned'\">"
    "<script>document.title='pwned'</script></ul><b>bold</b>"
)
L2_POOL, L1_FUNDING = 10**18, 3 * 10**18
T = TypeVar("T")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    tmp = tmp_path_factory.mktemp("explorer")
    genesis = Genesis(4343, 0, {pub(i): 10**21 for i in range(12)})
    path = tmp / "genesis.json"
    path.write_text(json.dumps(genesis.to_json()))
    args = ["--block-time-ms", "50", "--genesis", str(path)]
    # a short challenge window and frequent batches: records settle on L1 within the test
    args += ["--challenge-window-s", "2", "--batch-interval-ms", "500"]
    proc = NodeProcess(tmp / "data", free_port(), args).start(timeout=60)
    yield proc
    proc.kill()


def _get(node: NodeProcess, path: str) -> tuple[int, dict[str, str], bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(node.url + path, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_page_and_assets_are_served_with_a_strict_csp(node: NodeProcess) -> None:
    for path, content_type in [
        ("/explorer", "text/html"),
        ("/explorer/", "text/html"),
        ("/explorer/index.html", "text/html"),
        ("/explorer/explorer.js", "text/javascript"),
        ("/explorer/explorer.css", "text/css"),
    ]:
        status, headers, body = _get(node, path)
        assert status == 200, path
        assert headers["Content-Type"].split(";")[0] == content_type
        assert headers["Content-Security-Policy"] == CSP
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert body
    html = _get(node, "/explorer")[2].decode()
    assert "<script src=" in html and "<script>" not in html  # no inline script
    assert "script-src 'self'" in CSP and "unsafe" not in CSP
    for bad in ("/explorer/nope.js", "/explorer/..%2fapp.py", "/explorer/%2e%2e/app.py"):
        status, headers, body = _get(node, bad)
        assert status == 404 and json.loads(body)["error"] == "not_found", bad


def test_the_script_never_turns_data_into_markup() -> None:
    """The page builds its DOM with createElement/textContent only; none of the APIs that
    parse a string as HTML or code appears in it."""
    source = (ROOT / "node" / "server" / "explorer_static" / "explorer.js").read_text().splitlines()
    script = "\n".join(line for line in source if not line.lstrip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "srcdoc", "createContextualFragment"):  # fmt: skip
        assert sink not in script, sink
    assert set(ASSETS) == {p.name for p in (ROOT / "node" / "server" / "explorer_static").iterdir()}


def _eventually(read: Callable[[], T], ok: Callable[[T], bool], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"{what}: last seen {value!r}"
        time.sleep(0.2)


def _page_rounds(page: Any, job_id: int) -> dict[int, dict[str, Any]]:
    """round -> its status and participants as the page shows them."""
    found: dict[str, Any] = page.evaluate(
        """job => Object.fromEntries([...document.querySelectorAll(
              `details.round[data-job="${job}"]`)].map(d => [d.dataset.round, {
            status: d.dataset.status,
            rows: [...d.querySelectorAll("tr.participant")].map(tr => [tr.dataset.client,
              tr.querySelector(".outcome").textContent, tr.querySelector(".reason").textContent,
              tr.querySelector(".score").textContent])}]))""",
        job_id,
    )
    return {int(r): v for r, v in found.items()}


def _api_round(client: Client, job_id: int, rnd: int) -> dict[str, Any]:
    body = client.round(job_id, rnd)
    rows = [
        [d["client"], d["outcome"], d["reason"], "–" if d["score"] is None else d["score"]]
        for d in body["decisions"]
    ]
    return {"status": body["status"], "rows": rows}


def _page_slashes(page: Any, job_id: int) -> list[list[str]]:
    found: list[list[str]] = page.evaluate(
        """job => [...document.querySelectorAll(`article.job[data-job="${job}"] li.slash`)]
            .map(li => [li.dataset.client, li.dataset.round, li.dataset.reason])""",
        job_id,
    )
    return sorted(found)


def _api_records(client: Client) -> dict[str, str]:
    """Every settlement record in the chain's receipts -> whether L1 executed it, in the
    page's words: 'yes' (the keeper says `settled`), 'failed' (`failed:<L1 error>`) or 'no'."""
    out: dict[str, str] = {}
    for height in range(1, client.health()["head"]["height"] + 1):
        for receipt in client.block(height, full=True)["receipts"]:
            for record in receipt["records"]:
                out[record["record_id"]] = _executed(client, record["record_id"])
    return out


def _executed(client: Client, record_id: str) -> str:
    try:
        settled = client._get(f"/v1/settlements/{record_id}/proof")["settled"]
    except ApiError as exc:
        assert exc.code == "unknown_record"  # not in a batch yet
        return "no"
    if settled is None:
        return "no"
    return "yes" if settled == "settled" else "failed"


def _page_records(page: Any) -> dict[str, str]:
    found: dict[str, str] = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll("tr.record")]
            .map(tr => [tr.dataset.record, tr.dataset.settled]))"""
    )
    return found


def _page_batches(page: Any) -> dict[int, str]:
    found: dict[str, str] = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll("tr.batch")]
            .map(tr => [tr.dataset.index, tr.dataset.status]))"""
    )
    return {int(i): s for i, s in found.items()}


def _params(g: np.ndarray, who: int, direction: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    if who == COPIER:
        return g.astype(np.float32)
    if who == FLIPPER:
        return (g - 3 * direction).astype(np.float32)
    noise = np.random.default_rng(who).normal(0, 0.003, PARAMS)
    return (g + direction + noise).astype(np.float32)


def _run_round(client: Client, job_id: int, rnd: int, who: list[int], accuracy_bp: int) -> None:
    g = client.global_params(job_id, rnd - 1)
    direction = np.random.default_rng(100 + rnd).normal(0, 0.01, PARAMS)
    items = [(key(w), _params(g, w, direction), 100) for w in who]
    reveals = http_submit_round(client, key(OWNER), job_id, rnd, items)
    assert all(r["status"] != "failed" for r in reveals), reveals
    closed = client.wait(client.aggregate(key(OWNER), job_id, rnd, accuracy_bp))
    assert closed["status"] != "failed", closed


def _ticks(page: Any) -> int:
    """How many polls the page has drawn."""
    return int(page.evaluate("document.body.dataset.ticks"))


def _fund_on_l1(client: Client, job_id: int, amount: int) -> None:
    """The owner's side: fund the job's reward pool on the node's embedded L1."""
    from node.sdk.wallet import Wallet, connect, fund_job

    w3, deployment = connect(client.url)
    funder = Wallet(w3, b"\x77" * 32)
    funder.fund_from(w3.eth.accounts[0], amount + 10**18)
    fund_job(funder, deployment, job_id, amount)


def _browser() -> Any:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium as root")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: `make test` installs the `browser` extra")
    return sync_playwright()


def test_explorer_follows_a_training_job_in_a_real_browser(
    node: NodeProcess, tmp_path: Path
) -> None:
    client = node.client
    init = np.random.default_rng(0).normal(0, 0.1, PARAMS).astype("<f4").tobytes()
    client.execute(key(OWNER), "upload", Upload("digits", ARCH, init, 16, 0, b"artifact"))
    terms = harness_terms(rounds=3, round_blocks=10_000, f=1, min_participants=5)
    created = client.execute(
        key(OWNER), "propose", Propose("train", "digits", L2_POOL, 0, terms_to_tuple(terms))
    )
    job_id = int(event(created, "JobCreated")["job_id"])
    client.execute(key(OWNER), "message", PostMessage(job_id, HOSTILE))
    _fund_on_l1(client, job_id, L1_FUNDING)  # kept participants then get L1 reward records
    stake_on_l1_from_bound_wallets(client, CLIENTS, 2 * 10**18)
    _eventually(
        lambda: int(client.job(job_id)["funded"]),
        lambda funded: funded > L2_POOL,  # less the protocol fee taken on L1
        30,
        "the L1 funding reached L2",
    )
    _run_round(client, job_id, 1, CLIENTS, 8000)

    with _browser() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        missing: list[str] = []
        page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
        # CSP violations would mean something tried to run or load that the page did not ship
        page.add_init_script(
            "window.__violations = [];"
            "document.addEventListener('securitypolicyviolation',"
            " e => window.__violations.push(e.violatedDirective));"
        )
        page.goto(node.url + "/explorer")

        # round 1 as the page shows it equals the API's: every outcome, reason and score
        sel = f'details.round[data-job="{job_id}"][data-round="1"][data-status="aggregated"]'
        page.wait_for_selector(sel, state="attached", timeout=30_000)
        shown = _page_rounds(page, job_id)
        assert shown[1] == _api_round(client, job_id, 1)
        outcomes = {row[0]: (row[1], row[2]) for row in shown[1]["rows"]}
        assert outcomes["0x" + pub(COPIER).hex()] == ("slashed", "copy")
        assert outcomes["0x" + pub(FLIPPER).hex()] == ("excluded", "opposed")
        assert _page_slashes(page, job_id) == [["0x" + pub(COPIER).hex(), "1", "copy"]]
        kinds = page.locator("tr.record").evaluate_all("rows => rows.map(r => r.dataset.kind)")
        assert sorted(set(kinds)) == ["reward", "slash"]

        # the hostile message is shown as text and ran nothing
        texts = page.locator(f'article.job[data-job="{job_id}"] li.message .text')
        assert texts.all_text_contents() == [HOSTILE]
        assert page.locator("#jobs img, #jobs script, #jobs b").count() == 0
        assert page.title() == "fedrollup explorer"
        assert page.evaluate("window.__violations") == []

        # a new round lands while the page is open: it appears without a reload
        ticks = _ticks(page)
        _run_round(client, job_id, 2, [*HONEST, FLIPPER], 9000)  # the copier is out of the job
        sel = f'details.round[data-job="{job_id}"][data-round="2"][data-status="aggregated"]'
        page.wait_for_selector(sel, state="attached", timeout=30_000)
        assert _ticks(page) > ticks
        shown = _page_rounds(page, job_id)
        assert {r: shown[r] for r in (1, 2)} == {r: _api_round(client, job_id, r) for r in (1, 2)}
        dots = page.locator(f'article.job[data-job="{job_id}"] circle.dot')
        assert dots.count() == 2

        # settlement records and batches: the page converges on the API's answers, and
        # the copier's slash is executed on L1 by the node's keeper
        api = _eventually(
            lambda: _api_records(client),
            lambda recs: bool(recs) and set(recs.values()) == {"yes"},
            60,
            "every record executed on L1",
        )
        _eventually(lambda: _page_records(page), lambda recs: recs == api, 30, "page records")
        page_batches, _ = _eventually(
            lambda: (_page_batches(page), _api_latest_batches(client)),
            lambda pair: bool(pair[0]) and pair[0] == pair[1],
            30,
            "page batches",
        )
        assert page_batches and set(page_batches.values()) <= {"committed", "finalized"}

        # the reader's choice of open rounds survives the redraws: open round 1 (the latest
        # round with work, 2, is open by default)
        round_1 = page.locator(f'details.round[data-job="{job_id}"][data-round="1"]')
        round_2 = page.locator(f'details.round[data-job="{job_id}"][data-round="2"]')
        assert round_2.evaluate("d => d.open") and not round_1.evaluate("d => d.open")
        round_1.locator("summary").click()
        ticks = _ticks(page)
        _eventually(lambda: _ticks(page), lambda now: now > ticks + 1, 15, "two more polls")
        assert round_1.evaluate("d => d.open") and round_2.evaluate("d => d.open")

        assert errors == [] and page.evaluate("window.__violations") == []
        # the only 404s: the browser's favicon probe, and records not in a batch yet
        assert all(
            url.endswith("/favicon.ico") or (url.endswith("/proof") and "/v1/settlements/" in url)
            for url in missing
        ), missing
        shot = Path(os.environ.get("EXPLORER_SCREENSHOT", tmp_path / "explorer.png"))
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        browser.close()


def _api_latest_batches(client: Client) -> dict[int, str]:
    """The 10 latest batches (what the page lists) and their L1 status."""
    batches = client._get("/v1/batches")["batches"][-10:]
    return {b["index"]: b["status"] for b in batches}


def test_explorer_without_l1_says_so_and_follows_the_head(
    node_factory: type[NodeProcess], tmp_path: Path
) -> None:
    from node.sdk.devkeys import dev_key
    from stf.accounts import Transfer

    plain = node_factory(tmp_path / "data", free_port(), ["--l1", "none", "--block-time-ms", "50"])
    client = plain.start(timeout=60).client
    with _browser() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(plain.url + "/explorer")
        page.wait_for_selector("body[data-ticks]", state="attached", timeout=30_000)
        assert page.text_content("#batches-note") == "This node runs without L1."
        assert page.text_content("#jobs-note") == "No training job yet."
        client.wait(client.send(dev_key(1), "transfer", Transfer(bytes(dev_key(2).verify_key), 5)))
        head = client.health()["head"]["height"]
        shown = _eventually(
            lambda: page.text_content('#head dd[data-field="height"]'),
            lambda text: text == str(head),
            15,
            "the new head on the page",
        )
        assert page.locator(f'#blocks tr[data-height="{shown}"]').count() == 1
        assert errors == []
        browser.close()
