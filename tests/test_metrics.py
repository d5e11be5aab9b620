"""/metrics is Prometheus text that prometheus_client's own parser reads: counters end in
`_total`, every family has HELP, latency histograms and process metrics are there, and the
node says which event loop serves it (uvloop)."""

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from node.sdk.devkeys import dev_key
from tests.conftest import NodeProcess

COUNTERS = {
    "fedrollup_accepted",
    "fedrollup_executed",
    "fedrollup_failed",
    "fedrollup_blocks",
    "fedrollup_l1_messages",
    "fedrollup_rejected",
    "fedrollup_mempool_fsyncs",
    "fedrollup_l1_errors",
    "fedrollup_l1_deep_reorgs",
    "fedrollup_keeper_executed",
    "process_cpu_seconds",
}
GAUGES = {
    "fedrollup_head_height",
    "fedrollup_mempool_pending",
    "fedrollup_uptime_seconds",
    "fedrollup_l1_batches_committed",
    "fedrollup_l1_batches_finalized",
    "process_resident_memory_bytes",
    "process_open_fds",
}
HISTOGRAMS = {"fedrollup_accept_latency_seconds", "fedrollup_block_build_seconds"}


def _scrape(node: NodeProcess) -> tuple[str, str]:
    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


def test_metrics_parse_with_prometheus_client(node: NodeProcess) -> None:
    client = node.client
    key = dev_key(3)
    from stf.accounts import Transfer

    h = client.send(key, "transfer", Transfer(to=bytes(dev_key(4).verify_key), amount=1))
    client.wait(h, timeout=20)
    content_type, text = _scrape(node)
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in COUNTERS:
        assert families[name].type == "counter", name
        assert all(s.name == name + "_total" for s in families[name].samples), name
    for name in GAUGES:
        assert families[name].type == "gauge", name
    for name in HISTOGRAMS:
        fam = families[name]
        assert fam.type == "histogram", name
        suffixes = {s.name.removeprefix(name) for s in fam.samples}
        assert {"_bucket", "_sum", "_count"} <= suffixes, name
        assert any(s.labels.get("le") == "+Inf" for s in fam.samples)
    # every counter sample in the text ends in _total; every family has a HELP line
    for fam in families.values():
        assert fam.documentation, f"{fam.name} has no HELP"
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples)
    for line in text.splitlines():
        if line.startswith("# TYPE ") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line
    accepted = families["fedrollup_accepted"].samples[0].value
    assert accepted >= 1
    accept_count = next(
        s.value
        for s in families["fedrollup_accept_latency_seconds"].samples
        if s.name.endswith("_count")
    )
    assert accept_count >= 1
    assert families["fedrollup_head_height"].samples[0].value >= 1
    assert families["process_cpu_seconds"].samples[0].value > 0


def test_the_node_runs_on_uvloop(node: NodeProcess) -> None:
    _, text = _scrape(node)
    families = text_string_to_metric_families(text)
    (info,) = [f for f in families if f.name == "fedrollup_node_info"]
    assert info.type == "gauge"  # an info metric, in the text format a gauge of 1
    (sample,) = info.samples
    assert sample.value == 1
    assert sample.labels["event_loop"] == "uvloop.Loop"
    assert sample.labels["version"]
    assert "event loop uvloop.Loop" in node.log()
