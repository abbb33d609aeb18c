"""The fedsys quickstart written as a plain Flower Message-API app: the baseline for timing.

MNIST-1D (4000 train / 1000 test, 40 features), split IID into one partition per SuperNode by
a seeded permutation; the same 1-D CNN as fedsys's ``cnn1d``; one local epoch of SGD (lr 0.1,
momentum 0.9, batch 32) per round; FedAvg over all nodes; central evaluation on the test set
after every round. It is what a Flower user would write from Flower's own quickstarts, and it
imports nothing from fedsys on purpose: the model definition below duplicates fedsys's
``cnn1d`` (``fedsys/models/conv1d.py``: same layers, names, shapes and parameter count, and
the same initial weights from ``torch.manual_seed(0)``) because a baseline that imported
fedsys would share whatever fedsys costs and could not show it.

Like a careful Flower user, and to keep the baseline as fast as it can fairly be, data is
generated once per process and cached at module level (Ray reuses its worker processes across
clients and rounds; the data, evaluation and reporting code it shares with
``plain_flower_mlp.py`` is in ``_plain_common.py``, fedsys-free as well), clients run torch
with one thread, and minibatches are drawn by index from in-memory tensors instead of a
DataLoader.

Run it directly (it re-imports itself by name; see the end of the file for why)::

    FLWR_TELEMETRY_ENABLED=0 python simulations/plain_flower_app.py --rounds 30 \
        --num-supernodes 10 --report out.json

The report holds one entry per round: ``seconds`` is the time from the end of the previous
central evaluation (round 0 evaluates the initial model) to the end of this round's, i.e. the
whole round: sending the model, local training, aggregation, evaluation and Flower's own
work in between. ``simulations/compare_flower.py`` runs it next to ``fedsys simulate``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _plain_common import (
    LR,
    MOMENTUM,
    NUM_CLASSES,
    RoundLog,
    client_share,
    load_dataset,
    reply,
    simulate,
    test,
)
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from torch import nn

LOCAL_EPOCHS = 1
BATCH_SIZE = 32


# --------------------------------------------------------------------------------------------
# Model: a copy of fedsys's cnn1d (kept in sync by hand; see the module docstring)
# --------------------------------------------------------------------------------------------


class Net(nn.Module):
    """fedsys's ``Conv1dNet`` for 1-D inputs: three ``Conv1d(kernel 5, padding 2) + ReLU``
    layers that keep the sequence length, then one linear layer over the whole feature map
    (about 23k parameters with 32 channels). Same layer names, so state dicts match."""

    def __init__(self, length: int = 40, num_classes: int = NUM_CLASSES, channels: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for _ in range(3):
            layers += [nn.Conv1d(in_channels, channels, 5, padding=2), nn.ReLU()]
            in_channels = channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels * length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x.unsqueeze(1)), 1))


# --------------------------------------------------------------------------------------------
# Training (data, evaluation and reporting: ``_plain_common.py``)
# --------------------------------------------------------------------------------------------


def train_epochs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> float:
    """Local SGD on (x, y); returns the mean training loss."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    loss_sum, seen = 0.0, 0
    for _ in range(LOCAL_EPOCHS):
        order = torch.randperm(len(y), generator=generator)
        for begin in range(0, len(y), BATCH_SIZE):
            idx = order[begin : begin + BATCH_SIZE]
            xb, yb = x[idx], y[idx]
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(yb)
            seen += len(yb)
    return loss_sum / max(seen, 1)


# --------------------------------------------------------------------------------------------
# ClientApp
# --------------------------------------------------------------------------------------------

client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """Load the global model, train one local epoch, reply with the new weights."""
    partition_id, x, y = client_share(context)

    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    server_round = int(msg.content["config"]["server-round"])
    train_loss = train_epochs(model, x, y, seed=1000 * server_round + partition_id)
    return reply(msg, model, {"train_loss": train_loss, "num-examples": len(y)})


# --------------------------------------------------------------------------------------------
# ServerApp
# --------------------------------------------------------------------------------------------


def make_server_app(
    num_rounds: int, report: Path | None = None, metrics: Path | None = None
) -> ServerApp:
    """FedAvg for ``num_rounds`` with central evaluation.

    Timings: ``RoundLog`` (``report`` at the end, ``metrics`` as each round ends).
    """
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        log = RoundLog(metrics)
        data = load_dataset()
        torch.manual_seed(0)
        global_model = Net()

        def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            global_model.load_state_dict(arrays.to_torch_state_dict())
            loss, accuracy = test(global_model, data["x_test"], data["y_test"])
            log.mark(server_round, accuracy, loss)
            return MetricRecord({"accuracy": accuracy, "loss": loss})

        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0)
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(global_model.state_dict()),
            num_rounds=num_rounds,
            train_config=ConfigRecord(),
            evaluate_fn=central_evaluate,
        )
        log.add_train_metrics(result.train_metrics_clientapp, ("train_loss",), prefix="")
        log.write_report(report, global_model)

    return server_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--num-supernodes", type=int, default=10)
    parser.add_argument("--report", type=Path, default=None, help="Write the run's JSON here.")
    parser.add_argument("--metrics", type=Path, default=None, help="Append a line per round.")
    args = parser.parse_args()

    simulate(
        make_server_app(args.rounds, args.report, args.metrics), client_app, args.num_supernodes
    )


if __name__ == "__main__":
    # Run the module imported under its own name, not as __main__. Flower's simulation engine
    # sends the ClientApp to the Ray workers with every message; objects from __main__ are
    # pickled by value, so each message would carry the module's globals (the server's copy of
    # the dataset, ~850 KB) and the per-process caches would be rebuilt on every message.
    # Imported by name, the ClientApp is pickled by reference (a few hundred bytes), as it is
    # under `flwr run`. Ray puts this script's directory on the workers' sys.path (this module
    # and its sibling _plain_common.py are imported from there).
    from plain_flower_app import main as module_main

    module_main()
