"""Flower's own secure aggregation (legacy ``SecAggPlusWorkflow``) on the 10M-parameter MLP.

The baseline for ``bench_secagg.py``: the same model, data and local work as
``plain_flower_mlp.py`` (one SGD step per client and round on its IID share of MNIST-1D), run
the only way Flower offers secure aggregation: the legacy ``DefaultWorkflow`` with
``SecAggPlusWorkflow`` as its fit workflow, a legacy ``flwr.server.strategy.FedAvg``, and a
``NumPyClient`` behind ``secaggplus_mod`` on the client. ``--no-secagg`` runs the same legacy
path without it (Flower's legacy FedAvg), to separate the protocol's cost from the legacy path's.

Like the other baselines it imports nothing from fedsys. Each round's time is from the end of
one central evaluation (legacy ``evaluate_fn``) to the next, written as one JSON line per round
to ``--metrics`` (``bench_secagg.py`` times the lines' arrival from outside as well)::

    FLWR_TELEMETRY_ENABLED=0 python simulations/plain_flower_secaggplus.py --hidden 3137 \
        --rounds 4 --num-supernodes 10 --metrics out.jsonl --report out.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _plain_common import RoundLog, client_share, load_dataset, simulate, test
from flwr.app import Context
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid
from plain_flower_mlp import MODEL_SEED, client_model, make_model, train_one_step


def _set_weights(model: torch.nn.Module, weights: list[np.ndarray]) -> None:
    state = {
        k: torch.from_numpy(np.asarray(w)) for k, w in zip(model.state_dict(), weights, strict=True)
    }
    model.load_state_dict(state)


def _get_weights(model: torch.nn.Module) -> list[np.ndarray]:
    return [v.detach().cpu().numpy() for v in model.state_dict().values()]


class MlpClient(NumPyClient):
    def __init__(self, context: Context) -> None:
        self.context = context

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        partition_id, x, y = client_share(self.context)
        model = client_model(int(config["hidden"]))
        _set_weights(model, parameters)
        rnd = int(config["server-round"])
        started = time.perf_counter()
        loss, _ = train_one_step(model, x, y, int(config["batch-size"]), 1000 * rnd + partition_id)
        metrics = {"train_loss": loss, "train_seconds": time.perf_counter() - started}
        return _get_weights(model), len(y), metrics


def client_fn(context: Context) -> Any:
    return MlpClient(context).to_client()


secagg_client_app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
plain_client_app = ClientApp(client_fn=client_fn)


def make_server_app(args: argparse.Namespace) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        log = RoundLog(args.metrics)
        data = load_dataset()
        torch.manual_seed(MODEL_SEED)
        model = make_model(args.hidden)

        def evaluate_fn(
            server_round: int, weights: list[np.ndarray], config: dict[str, Any]
        ) -> tuple[float, dict[str, float]]:
            _set_weights(model, weights)
            loss, accuracy = test(model, data["x_test"], data["y_test"])
            log.mark(server_round, accuracy, loss)
            return loss, {"accuracy": accuracy}

        def fit_config(server_round: int) -> dict[str, Any]:
            return {
                "hidden": args.hidden,
                "batch-size": args.batch_size,
                "server-round": server_round,
            }

        from flwr.common import ndarrays_to_parameters

        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=args.num_supernodes,
            min_available_clients=args.num_supernodes,
            initial_parameters=ndarrays_to_parameters(_get_weights(model)),
            evaluate_fn=evaluate_fn,
            on_fit_config_fn=fit_config,
        )
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=args.rounds), strategy=strategy
        )
        if args.no_secagg:
            workflow = DefaultWorkflow()
        else:
            workflow = DefaultWorkflow(
                fit_workflow=SecAggPlusWorkflow(
                    num_shares=args.num_supernodes - 1, reconstruction_threshold=0.5
                )
            )
        workflow(grid, legacy)
        log.write_report(args.report, model, hidden=args.hidden, secagg=not args.no_secagg)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hidden", type=int, default=3137)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--num-supernodes", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--no-secagg", action="store_true")
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--metrics", type=Path, default=None)
    args = parser.parse_args()
    client_app = plain_client_app if args.no_secagg else secagg_client_app
    simulate(make_server_app(args), client_app, args.num_supernodes)


if __name__ == "__main__":
    # Imported by name so Ray pickles the ClientApp by reference (see plain_flower_mlp.py).
    from plain_flower_secaggplus import main as module_main

    module_main()
