"""A large MLP on MNIST-1D as a plain Flower Message-API app: the baseline for round time.

Made for timing what a round costs when the model is large and local work is trivial, so that
moving the model dominates: the MLP ``Linear(40, H) - ReLU - Linear(H, H) - ReLU - Linear(H, 10)``
has ``H^2 + 52 H + 10`` parameters (H = 3137: 10,003,903, about 40 MB in float32). Each client
does one SGD step (lr 0.1, momentum 0.9) per round on one minibatch of its IID share of
MNIST-1D's 4000 training samples (by default the whole share, i.e. exactly what fedsys does with
``train.batch_size = 4000 / clients``); the server runs Flower's own ``FedAvg`` over all nodes.

It imports nothing from fedsys on purpose (a baseline that shared fedsys's code would share its
costs); what it shares with ``plain_flower_app.py`` is in ``_plain_common.py``, fedsys-free
too. The model is built like fedsys's ``mlp`` (``fedsys/models/dense.py``: ``Flatten`` first,
so the state-dict names are ``1.weight`` ... ``5.bias``, and the same initial weights from
``torch.manual_seed(0)``; config ``model.name=mlp``, ``model.hidden=[H, H]``).

As a careful Flower user would, each worker process generates the data once, keeps one model
object per width and overwrites its weights on every message (building and initialising 10M
parameters per message would cost more than the training step), and runs torch on one thread.

Central evaluation after every round (``--central-eval test``, the default) scores the global
model on the 1000 test samples in one batch, which is what fedsys does every round (it has no
switch to skip it); ``--central-eval none`` only notes the time.

Run it directly (it re-imports itself by name; see the end of the file for why)::

    FLWR_TELEMETRY_ENABLED=0 python simulations/plain_flower_mlp.py --hidden 3137 \
        --rounds 8 --num-supernodes 10 --report out.json --metrics out.jsonl

Per round, ``seconds`` is the time from the end of the previous evaluate_fn call (round 0 is
the initial model) to the end of this round's: sending the model, the local step, replies,
aggregation, evaluation and Flower's own work in between. ``bytes_down`` / ``bytes_up`` are
the float32 model's ``ArrayRecord.count_bytes()`` times the number of clients (every node
trains every round and replies with its full weights). ``simulations/bench_round_10m.py``
runs it next to ``fedsys simulate``.
"""

from __future__ import annotations

import argparse
import time
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

MODEL_SEED = 0
INPUT_FEATURES = 40
TRAIN_SAMPLES = 4000
DEFAULT_HIDDEN = 3137  # the smallest width with at least 10M parameters


# --------------------------------------------------------------------------------------------
# Model: fedsys's ``mlp`` with two hidden layers of width H (kept in sync by hand)
# --------------------------------------------------------------------------------------------


def make_model(hidden: int) -> nn.Sequential:
    """``Flatten, Linear(40, H), ReLU, Linear(H, H), ReLU, Linear(H, 10)``: same layer indices
    (hence state-dict names) and construction order as ``fedsys.models.dense.mlp``."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(INPUT_FEATURES, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, NUM_CLASSES),
    )


def parameter_count(hidden: int) -> int:
    """``(40 + 1) H + (H + 1) H + (H + 1) 10``, without building the model."""
    return (INPUT_FEATURES + 1) * hidden + (hidden + 1) * hidden + (hidden + 1) * NUM_CLASSES


# --------------------------------------------------------------------------------------------
# Model objects: made once per process (Ray reuses its workers; data: ``_plain_common.py``)
# --------------------------------------------------------------------------------------------

_MODELS: dict[int, nn.Module] = {}


def client_model(hidden: int) -> nn.Module:
    """One model object per width and process; its weights are overwritten on every message."""
    if hidden not in _MODELS:
        _MODELS[hidden] = make_model(hidden)
    return _MODELS[hidden]


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def train_one_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int
) -> tuple[float, int]:
    """One SGD step on one random minibatch (the whole share if ``batch_size`` covers it).

    Returns the batch's loss and its size."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    generator = torch.Generator().manual_seed(seed)
    size = len(y) if batch_size <= 0 else min(batch_size, len(y))
    idx = torch.randperm(len(y), generator=generator)[:size]
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return float(loss.detach()), size


# --------------------------------------------------------------------------------------------
# ClientApp
# --------------------------------------------------------------------------------------------

client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """Load the global model, take one local step, reply with the new weights."""
    partition_id, x, y = client_share(context)

    config = msg.content.config_records["config"]
    model = client_model(int(config["hidden"]))  # type: ignore[arg-type]
    model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
    server_round = int(config["server-round"])  # type: ignore[arg-type]
    batch_size = int(config["batch-size"])  # type: ignore[arg-type]
    started = time.perf_counter()
    loss, _ = train_one_step(model, x, y, batch_size, seed=1000 * server_round + partition_id)
    return reply(
        msg,
        model,
        {
            "train_loss": loss,
            "train_seconds": time.perf_counter() - started,
            "num-examples": len(y),
        },
    )


# --------------------------------------------------------------------------------------------
# ServerApp
# --------------------------------------------------------------------------------------------


def make_server_app(
    num_rounds: int,
    hidden: int,
    batch_size: int,
    num_clients: int,
    central_eval: str,
    report: Path | None = None,
    metrics: Path | None = None,
) -> ServerApp:
    """FedAvg over all ``num_clients`` nodes for ``num_rounds``.

    Timings: ``RoundLog`` (``report`` at the end, ``metrics`` as each round ends).
    """
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        log = RoundLog(metrics)
        data = load_dataset()
        torch.manual_seed(MODEL_SEED)
        global_model = make_model(hidden)
        initial = ArrayRecord(global_model.state_dict())
        model_bytes = initial.count_bytes()

        def on_round_end(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            loss: float | None = None
            accuracy: float | None = None
            if central_eval == "test":
                global_model.load_state_dict(arrays.to_torch_state_dict())
                loss, accuracy = test(global_model, data["x_test"], data["y_test"])
            log.mark(
                server_round,
                accuracy,
                loss,
                bytes_down=model_bytes * num_clients,
                bytes_up=model_bytes * num_clients,
            )
            if accuracy is None or loss is None:
                return None
            return MetricRecord({"accuracy": accuracy, "loss": loss})

        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0)
        result = strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=num_rounds,
            train_config=ConfigRecord({"hidden": hidden, "batch-size": batch_size}),
            evaluate_fn=on_round_end,
        )
        log.add_train_metrics(
            result.train_metrics_clientapp, ("train_loss", "train_seconds"), prefix="client_"
        )
        log.write_report(
            report,
            global_model,
            model_bytes=model_bytes,
            hidden=hidden,
            batch_size=batch_size,
            central_eval=central_eval,
        )

    return server_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hidden", type=int, default=DEFAULT_HIDDEN, help="Hidden width H.")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--num-supernodes", type=int, default=10)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="Minibatch of the one local step (default 0: the client's whole share).",
    )
    parser.add_argument(
        "--central-eval",
        choices=("test", "none"),
        default="test",
        help="After each round: score the global model on the test set, or only note the time.",
    )
    parser.add_argument("--report", type=Path, default=None, help="Write the run's JSON here.")
    parser.add_argument("--metrics", type=Path, default=None, help="Append a line per round.")
    args = parser.parse_args()
    if args.hidden < 1 or args.num_supernodes < 2:
        parser.error("--hidden must be >= 1 and --num-supernodes >= 2 (FedAvg's minimum)")
    if args.num_supernodes > TRAIN_SAMPLES:
        parser.error(f"--num-supernodes cannot exceed the {TRAIN_SAMPLES} training samples")

    server_app = make_server_app(
        args.rounds,
        args.hidden,
        args.batch_size,
        args.num_supernodes,
        args.central_eval,
        args.report,
        args.metrics,
    )
    simulate(server_app, client_app, args.num_supernodes)


if __name__ == "__main__":
    # Run the module imported under its own name, not as __main__. Flower's simulation engine
    # sends the ClientApp to the Ray workers with every message; objects from __main__ are
    # pickled by value, so each message would carry the module's globals (the server's copy of
    # the dataset) and the per-process caches would be rebuilt on every message. Imported by
    # name, the ClientApp is pickled by reference (a few hundred bytes), as it is under
    # `flwr run`. Ray puts this script's directory on the workers' sys.path (this module and
    # its sibling _plain_common.py are imported from there).
    from plain_flower_mlp import main as module_main

    module_main()
