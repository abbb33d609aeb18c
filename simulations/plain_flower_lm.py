"""Federated LoRA written as a plain Flower app with transformers + peft: the LM baseline.

What a Flower user writes from Flower's LLM examples (FlowerTune): a ClientApp that loads the
base causal LM, wraps it with a ``peft`` LoRA adapter, loads the global adapter from the
message's ArrayRecord, trains a few steps and replies with its full fp32 adapter tensors; a
ServerApp running FedAvg over those tensors with a central evaluation after every round, in
Flower's Ray simulation engine with one CPU per client. It imports nothing from fedsys on
purpose (a baseline that imported fedsys would share whatever fedsys costs).

Inputs, prepared by ``simulations/bench_lm_flower.py`` so both sides see the same text:
``--base`` a Hugging Face checkpoint directory (``fedsys pretrain``'s output), ``--data`` a
directory with ``client_<i>.npy`` (each client's training chunks, int64 token ids) and
``central.npy`` (the server's evaluation chunks). Like a careful Flower user, each Ray worker
loads the base and its partition once and caches them at module level.

The report holds one entry per round: ``seconds`` from the end of the previous central
evaluation to the end of this one (the whole round), and ``bytes`` that crossed the wire in
ArrayRecord payloads (the global adapter to every client, every client's adapter back).
"""

from __future__ import annotations

import argparse
import math
from functools import cache
from pathlib import Path

import numpy as np
import torch
from _plain_common import RoundLog, simulate
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn
from torch.nn import functional as F
from transformers import AutoModelForCausalLM

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


@cache
def peft_model(base: str, rank: int, alpha: float) -> nn.Module:
    """The base with a LoRA adapter, built once per worker process."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGET_MODULES, bias="none")
    return get_peft_model(model, config)


@cache
def partition(data: str, partition_id: int) -> torch.Tensor:
    return torch.from_numpy(np.load(Path(data) / f"client_{partition_id}.npy"))


def lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids).logits[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def adapter_arrays(model: nn.Module) -> ArrayRecord:
    return ArrayRecord({k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()})


def record_bytes(arrays: ArrayRecord) -> int:
    return sum(len(a.data) for a in arrays.values())


# --------------------------------------------------------------------------------------------
# ClientApp
# --------------------------------------------------------------------------------------------

client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """Load the global adapter, train ``steps`` AdamW steps, reply with the whole adapter."""
    cfg = msg.content["config"]
    model = peft_model(str(cfg["base"]), int(cfg["rank"]), float(cfg["alpha"]))
    set_peft_model_state_dict(model, msg.content["arrays"].to_torch_state_dict())
    partition_id = int(context.node_config["partition-id"])
    data = partition(str(cfg["data"]), partition_id)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(cfg["lr"]), weight_decay=0.0)
    generator = torch.Generator().manual_seed(1000 * int(cfg["server-round"]) + partition_id)
    batch, steps, loss_sum = int(cfg["batch-size"]), int(cfg["steps"]), 0.0
    model.train()
    done = 0
    while done < steps:
        order = torch.randperm(len(data), generator=generator)
        for begin in range(0, len(data), batch):
            if done >= steps:
                break
            optimizer.zero_grad()
            loss = lm_loss(model, data[order[begin : begin + batch]])
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            done += 1
    content = RecordDict(
        {
            "arrays": adapter_arrays(model),
            "metrics": MetricRecord({"train_loss": loss_sum / steps, "num-examples": len(data)}),
        }
    )
    return Message(content=content, reply_to=msg)


# --------------------------------------------------------------------------------------------
# ServerApp
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def perplexity(model: nn.Module, chunks: torch.Tensor, batch: int = 32) -> float:
    model.eval()
    total, tokens = 0.0, 0
    for begin in range(0, len(chunks), batch):
        ids = chunks[begin : begin + batch]
        total += float(lm_loss(model, ids)) * ids[:, 1:].numel()
        tokens += ids[:, 1:].numel()
    return math.exp(total / max(tokens, 1))


def make_server_app(args: argparse.Namespace) -> ServerApp:
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        log = RoundLog(args.metrics)
        model = peft_model(str(args.base), args.rank, args.alpha)
        central = torch.from_numpy(np.load(args.data / "central.npy"))
        initial = adapter_arrays(model)
        # every round: the global adapter to each client, each client's adapter back
        round_bytes = 2 * args.num_supernodes * record_bytes(initial)

        def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            set_peft_model_state_dict(model, arrays.to_torch_state_dict())
            ppl = perplexity(model, central)
            log.mark(server_round, None, math.log(ppl), perplexity=ppl, bytes=round_bytes)
            return MetricRecord({"perplexity": ppl})

        train_config = ConfigRecord(
            {
                "base": str(args.base),
                "data": str(args.data),
                "rank": args.rank,
                "alpha": args.alpha,
                "lr": args.lr,
                "steps": args.steps,
                "batch-size": args.batch_size,
            }
        )
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0)
        strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=args.rounds,
            train_config=train_config,
            evaluate_fn=central_evaluate,
        )
        log.write_report(args.report, model, adapter_bytes=record_bytes(initial))

    return server_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-supernodes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--metrics", type=Path, default=None)
    args = parser.parse_args()
    simulate(make_server_app(args), client_app, args.num_supernodes)


if __name__ == "__main__":
    # Imported by name, not run as __main__, so the ClientApp is pickled by reference (see
    # plain_flower_app.py for why).
    from plain_flower_lm import main as module_main

    module_main()
