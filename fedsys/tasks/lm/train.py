"""Local training and evaluation of a causal language model on token chunks.

The same shape as ``fedsys.training`` for classifiers (seeded index batches, a step budget from
``train.local_epochs`` / ``train.max_steps``, FedProx's proximal gradient), with next-token
cross-entropy; evaluation reports loss per token, perplexity and next-token accuracy.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from fedsys.config import TrainConfig
from fedsys.tasks.lm.split import Chunks
from fedsys.training import TrainResult


@dataclass(frozen=True)
class LMEval:
    loss: float  # mean next-token cross-entropy (nats per token)
    perplexity: float
    accuracy: float  # next-token top-1
    num_examples: int  # chunks
    tokens: int  # predicted tokens


def _optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids, use_cache=False)
    logits: torch.Tensor = out.logits
    return logits


def next_token_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = _logits(model, ids)[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))


def train_lm(
    model: nn.Module,
    chunks: Chunks,
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    proximal_mu: float = 0.0,
    work_fraction: float = 1.0,
) -> TrainResult:
    """Minibatch next-token training of the parameters that require gradients."""
    start = time.perf_counter()
    model.to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    anchors = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    optimizer = _optimizer(params, cfg)
    data = torch.from_numpy(chunks)
    generator = torch.Generator().manual_seed(seed)
    n = len(data)
    batches_per_epoch = max(1, -(-n // cfg.batch_size))
    budget = max(1, round(work_fraction * cfg.local_epochs * batches_per_epoch))
    if cfg.max_steps is not None:
        budget = min(budget, cfg.max_steps)
    use_amp = cfg.amp and device.type == "cuda"
    steps, loss_sum = 0, 0.0
    while steps < budget:
        order = torch.randperm(n, generator=generator)
        for begin in range(0, n, cfg.batch_size):
            if steps >= budget:
                break
            batch = data[order[begin : begin + cfg.batch_size]].to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = next_token_loss(model, batch)
            loss.backward()  # type: ignore[no-untyped-call]
            if anchors:
                with torch.no_grad():
                    for p, anchor in zip(params, anchors, strict=True):
                        if p.grad is not None:
                            p.grad.add_(p.detach() - anchor, alpha=proximal_mu)
            optimizer.step()
            steps += 1
            loss_sum += float(loss.detach())
    model.eval()
    return TrainResult(
        num_examples=n,
        train_loss=loss_sum / max(steps, 1),
        steps=steps,
        seconds=time.perf_counter() - start,
    )


@torch.no_grad()
def evaluate_lm(
    model: nn.Module, chunks: Chunks, *, batch_size: int, device: torch.device
) -> LMEval:
    """Next-token loss, perplexity and accuracy over every position of every chunk."""
    model.to(device)
    model.eval()
    data = torch.from_numpy(chunks)
    total, correct, tokens = 0.0, 0, 0
    for begin in range(0, len(data), batch_size):
        ids = data[begin : begin + batch_size].to(device)
        logits = _logits(model, ids)[:, :-1].float()
        targets = ids[:, 1:]
        total += float(
            F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
            )
        )
        correct += int((logits.argmax(-1) == targets).sum())
        tokens += targets.numel()
    loss = total / max(tokens, 1)
    return LMEval(
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)),
        accuracy=correct / max(tokens, 1),
        num_examples=len(data),
        tokens=tokens,
    )
