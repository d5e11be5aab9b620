"""The Flower adapter end to end: plain Flower NumPyClients, written as in Flower's PyTorch
quickstart (a small torch model on scikit-learn's digits, one local epoch per fit), train a
job over real HTTP on a real node with its embedded L1, through commit-reveal, unchanged.
The global model learns, every client is paid for the rounds it was kept, nobody is slashed."""

import json
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch
from flwr.client import NumPyClient
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold, train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from node.participant.flower import FlowerParticipant, FlowerRound, ParamLayout
from node.sdk.client import Client, event
from rollup.genesis import Genesis
from stf.actions import Propose, terms_to_tuple
from stf.aggregation import EXCLUDING_REASONS
from stf.jobs import AggregateRound
from stf.models import Upload
from tests.conftest import ROOT, NodeProcess, free_port
from tests.fl_harness import key, pub
from tests.fl_harness import terms as harness_terms
from tests.test_fl_http import stake_on_l1_from_bound_wallets

OWNER = 0
CLIENTS = [3, 4, 5, 6, 7]
ROUNDS = 4
POOL = 4 * 10**18


# ---- the user's code: a Flower NumPyClient as in Flower's PyTorch quickstart (README) ----


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def train(net: Net, trainloader: DataLoader, epochs: int) -> None:
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net.train()
    for _ in range(epochs):
        for images, labels in trainloader:
            optimizer.zero_grad()
            criterion(net(images), labels).backward()
            optimizer.step()


def evaluate_net(net: Net, testloader: DataLoader) -> tuple[float, float]:
    criterion = nn.CrossEntropyLoss(reduction="sum")
    correct, loss = 0, 0.0
    net.eval()
    with torch.no_grad():
        for images, labels in testloader:
            outputs = net(images)
            loss += criterion(outputs, labels).item()
            correct += (outputs.argmax(1) == labels).sum().item()
    return loss / len(testloader.dataset), correct / len(testloader.dataset)


class FlowerClient(NumPyClient):
    def __init__(self, net: Net, trainloader: DataLoader, valloader: DataLoader) -> None:
        self.net = net
        self.trainloader = trainloader
        self.valloader = valloader

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return [val.cpu().numpy() for _, val in self.net.state_dict().items()]

    def set_parameters(self, parameters: list[np.ndarray]) -> None:
        params_dict = zip(self.net.state_dict().keys(), parameters, strict=True)
        state_dict = OrderedDict({k: torch.tensor(v) for k, v in params_dict})
        self.net.load_state_dict(state_dict, strict=True)

    def fit(self, parameters, config):
        self.set_parameters(parameters)
        train(self.net, self.trainloader, epochs=1)
        return self.get_parameters(config={}), len(self.trainloader.dataset), {}

    def evaluate(self, parameters, config):
        self.set_parameters(parameters)
        loss, accuracy = evaluate_net(self.net, self.valloader)
        return float(loss), len(self.valloader.dataset), {"accuracy": float(accuracy)}


# ---- the test ----


def digits_loaders(partitions: int) -> tuple[list[DataLoader], DataLoader]:  # type: ignore[type-arg]
    """Stratified shards of the digits train split for each client, and the test split."""
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X / 16.0, y, test_size=0.25, stratify=y, random_state=0
    )
    folds = StratifiedKFold(partitions, shuffle=True, random_state=0).split(X_tr, y_tr)

    def dataset(X: np.ndarray, y: np.ndarray) -> TensorDataset:  # type: ignore[type-arg]
        return TensorDataset(torch.tensor(X, dtype=torch.float32), torch.tensor(y))

    trains = [
        DataLoader(
            dataset(X_tr[idx], y_tr[idx]),
            batch_size=32,
            shuffle=True,
            generator=torch.Generator().manual_seed(i),
        )
        for i, (_, idx) in enumerate(folds)
    ]
    return trains, DataLoader(dataset(X_te, y_te), batch_size=256)


@pytest.fixture
def node(tmp_path: Any, node_factory: type[NodeProcess]) -> NodeProcess:
    genesis = Genesis(4242, 0, {pub(i): 10**21 for i in range(10)})
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(genesis.to_json()))
    return node_factory(
        tmp_path / "data", free_port(), ["--block-time-ms", "50", "--genesis", str(path)]
    ).start()


def test_flower_numpy_clients_train_a_job_over_http(node: NodeProcess) -> None:
    client = node.client
    torch.manual_seed(0)
    trains, testloader = digits_loaders(len(CLIENTS))
    flower_clients = [FlowerClient(Net(), trains[i], testloader) for i in range(len(CLIENTS))]
    start = Net()
    arch = tuple((name, tuple(t.shape)) for name, t in start.state_dict().items())
    layout = ParamLayout.of(FlowerClient(start, trains[0], testloader).get_parameters({}))
    init = layout.flatten(FlowerClient(start, trains[0], testloader).get_parameters({}))
    client.execute(key(OWNER), "upload", Upload("net", arch, init.tobytes(), 16, 0, b""))
    terms = harness_terms(
        rounds=ROUNDS, min_participants=5, max_participants=5, f=1, round_blocks=10_000
    )
    status = client.execute(
        key(OWNER), "propose", Propose("train", "net", POOL, 0, terms_to_tuple(terms))
    )
    job_id = int(event(status, "JobCreated")["job_id"])
    stake_on_l1_from_bound_wallets(client, CLIENTS, 2 * 10**18)
    balances = {w: int(client.account(pub(w))["balance"]) for w in CLIENTS}

    def evaluate_global(r: int) -> float:
        net = FlowerClient(Net(), trains[0], testloader)
        net.set_parameters(layout.unflatten(client.global_params(job_id, r)))
        return evaluate_net(net.net, testloader)[1]

    participants = [
        FlowerParticipant(Client(node.url), key(w), job_id, fc, poll_s=0.05)
        for w, fc in zip(CLIENTS, flower_clients, strict=True)
    ]
    with ThreadPoolExecutor(len(participants)) as pool:
        running = [pool.submit(p.run) for p in participants]
        aggregated = [_close_round(client, job_id, r) for r in range(1, ROUNDS + 1)]
        reports: list[list[FlowerRound]] = [f.result(timeout=120) for f in running]

    assert client.job(job_id)["status"] == "completed"
    before, after = evaluate_global(0), evaluate_global(ROUNDS)
    print(f"global accuracy: round 0 {before:.3f}, round {ROUNDS} {after:.3f}")
    assert before < 0.3 and after > 0.8, (before, after)  # chance is 0.1
    for w, report in zip(CLIENTS, reports, strict=True):
        assert [x.round for x in report] == list(range(1, ROUNDS + 1))
        assert all(x.fit_examples == len(trains[CLIENTS.index(w)].dataset) for x in report)
        accuracy = [float(x.eval_metrics["accuracy"]) for x in report]
        assert accuracy[-1] > accuracy[0] and accuracy[-1] == pytest.approx(after)
        assert report[-1].loss < report[0].loss
        # paid for exactly the rounds it was kept; excluded at worst, never slashed
        me = "0x" + pub(w).hex()
        assert all(x.outcome in ("kept", *EXCLUDING_REASONS) for x in report), report
        paid = sum(int(ev["reward_each_l2"]) for ev in aggregated if me in ev["kept"])
        kept_rounds = [x.round for x in report if x.outcome == "kept"]
        assert kept_rounds == [r for r, ev in enumerate(aggregated, 1) if me in ev["kept"]]
        assert paid > 0 and int(client.account(pub(w))["balance"]) == balances[w] + paid
        assert client.stake_of(pub(w)) == 2 * 10**18


def _close_round(client: Client, job_id: int, r: int) -> dict[str, Any]:
    """The owner closes the commits once every client committed, then the round once every
    client revealed; the RoundAggregated event."""
    _until(lambda: len(client.round(job_id, r)["submissions"]) == len(CLIENTS))
    client.execute(key(OWNER), "aggregate", AggregateRound(job_id, r, 0))
    _until(lambda: all(s["revealed"] for s in client.round(job_id, r)["submissions"]))
    status = client.execute(key(OWNER), "aggregate", AggregateRound(job_id, r, 0))
    return event(status, "RoundAggregated")


def _until(check: Any, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_layout_round_trips_and_refuses_what_the_rollup_would() -> None:
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7.5], dtype=np.float32)]
    layout = ParamLayout.of(arrays)
    assert layout.size == 7
    flat = layout.flatten(arrays)
    assert flat.dtype == np.float32 and flat.tolist() == [0, 1, 2, 3, 4, 5, 7.5]
    back = layout.unflatten(flat)
    assert [a.shape for a in back] == [(2, 3), (1,)] and all(
        np.array_equal(a, b) for a, b in zip(arrays, back, strict=True)
    )
    with pytest.raises(ValueError, match="shapes"):
        layout.flatten([arrays[0]])
    with pytest.raises(ValueError, match="NaN or infinite"):
        layout.flatten([arrays[0], np.array([np.nan], dtype=np.float32)])
    with pytest.raises(ValueError, match="not the same architecture"):
        layout.unflatten(np.zeros(8, dtype=np.float32))


def test_only_a_numpy_client_is_adapted() -> None:
    with pytest.raises(TypeError, match="NumPyClient"):  # refused before any request
        FlowerParticipant(Client("http://127.0.0.1:9"), key(3), 1, object())  # type: ignore[arg-type]


def test_without_the_extra_it_says_what_to_install() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['flwr'] = None  # as if the flower extra were not installed\n"
        "from node.sdk.client import Client\n"
        "from node.participant.flower import FlowerParticipant, MissingFlower\n"
        "from tests.fl_harness import key\n"
        "try:\n"
        "    FlowerParticipant(Client('http://127.0.0.1:9'), key(3), 1, object())\n"
        "except MissingFlower as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'fedrollup[flower]'" in out.stdout
