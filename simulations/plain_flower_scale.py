"""A cross-device baseline written as a plain Flower Message-API app: many clients, few sampled.

Each of ``--num-supernodes`` virtual clients holds its own small Synthetic-style dataset (60
features, 10 classes, its own softmax-regression labelling and input mean), generated on first
use from a per-client seed, the way a Flower user with a large population loads one partition
at a time; the model is multinomial logistic regression; each round Flower's FedAvg samples
``--sampled`` clients (``fraction_train = sampled / population``), each trains one local epoch
of SGD, and the server evaluates centrally on a fixed held-out set.

It imports nothing from fedsys on purpose (see ``plain_flower_app.py``). ``bench_scale.py``
runs it beside ``fedsys simulate`` on the same population sizes.

    FLWR_TELEMETRY_ENABLED=0 python simulations/plain_flower_scale.py --rounds 5 \
        --num-supernodes 1000 --sampled 10 --report out.json --metrics out.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _plain_common import RoundLog, reply, simulate, test
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from torch import nn

FEATURES, CLASSES = 60, 10
SAMPLES_PER_CLIENT = 50
TEST_SAMPLES = 2000
LR = 0.05
BATCH_SIZE = 10

_CLIENT_DATA: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def client_data(
    partition_id: int, n: int = SAMPLES_PER_CLIENT
) -> tuple[torch.Tensor, torch.Tensor]:
    """Client ``partition_id``'s samples: its own labelling model and input mean."""
    if partition_id not in _CLIENT_DATA:
        rng = np.random.default_rng([7, partition_id])
        u, big_b = rng.normal(0.0, 1.0), rng.normal(0.0, 1.0)
        w = rng.normal(u, 1.0, size=(FEATURES, CLASSES))
        b = rng.normal(u, 1.0, size=CLASSES)
        v = rng.normal(big_b, 1.0, size=FEATURES)
        x = v + np.arange(1, FEATURES + 1) ** -0.6 * rng.standard_normal((n, FEATURES))
        y = np.argmax(x @ w + b, axis=1)
        _CLIENT_DATA[partition_id] = (
            torch.as_tensor(x, dtype=torch.float32),
            torch.as_tensor(y, dtype=torch.int64),
        )
    return _CLIENT_DATA[partition_id]


def test_set() -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out samples from the first 40 clients' distributions."""
    parts = [client_data(10_000_000 + k, TEST_SAMPLES // 40) for k in range(40)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """One local epoch of SGD on this client's data; reply with the new weights."""
    torch.set_num_threads(1)
    x, y = client_data(int(context.node_config["partition-id"]))
    model = nn.Linear(FEATURES, CLASSES)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss_sum = 0.0
    for begin in range(0, len(y), BATCH_SIZE):
        optimizer.zero_grad()
        xb, yb = x[begin : begin + BATCH_SIZE], y[begin : begin + BATCH_SIZE]
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item()
    return reply(msg, model, {"train_loss": loss_sum, "num-examples": len(y)})


def make_server_app(
    num_rounds: int, population: int, sampled: int, report: Path | None, metrics: Path | None
) -> ServerApp:
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        log = RoundLog(metrics)
        x_test, y_test = test_set()
        torch.manual_seed(0)
        model = nn.Linear(FEATURES, CLASSES)

        def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            model.load_state_dict(arrays.to_torch_state_dict())
            loss, accuracy = test(model, x_test, y_test)
            log.mark(server_round, accuracy, loss)
            return MetricRecord({"accuracy": accuracy, "loss": loss})

        strategy = FedAvg(
            fraction_train=sampled / population,
            fraction_evaluate=0.0,
            min_train_nodes=sampled,
            min_available_nodes=sampled,
        )
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=num_rounds,
            train_config=ConfigRecord(),
            evaluate_fn=central_evaluate,
        )
        log.write_report(report, model)

    return server_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--num-supernodes", type=int, default=100)
    parser.add_argument("--sampled", type=int, default=10)
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--metrics", type=Path, default=None)
    args = parser.parse_args()
    app = make_server_app(args.rounds, args.num_supernodes, args.sampled, args.report, args.metrics)
    simulate(app, client_app, args.num_supernodes)


if __name__ == "__main__":
    # Imported by name so the ClientApp is pickled by reference (see plain_flower_app.py).
    from plain_flower_scale import main as module_main

    module_main()
