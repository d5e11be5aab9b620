"""The API description's action status enum covers every status the node really answers,
including `committed` and `finalized` once the action's batch is on L1 (it had drifted)."""

import json
import time
import urllib.request

from node.sdk.devkeys import dev_key
from stf.accounts import Transfer
from tests.conftest import NodeProcess


def test_action_status_enum_covers_committed_and_finalized(node: NodeProcess) -> None:
    with urllib.request.urlopen(node.url + "/openapi.json", timeout=10) as resp:
        spec = json.loads(resp.read())
    enum = spec["components"]["schemas"]["ActionStatus"]["properties"]["status"]["enum"]
    client = node.client
    h = client.send(dev_key(5), "transfer", Transfer(to=bytes(dev_key(6).verify_key), amount=1))
    seen = {client.action(h)["status"]}
    deadline = time.monotonic() + 60
    while "finalized" not in seen and time.monotonic() < deadline:
        seen.add(client.action(h)["status"])
        time.sleep(0.2)
    assert {"committed", "finalized"} <= seen, seen
    assert seen <= set(enum), (seen, enum)
