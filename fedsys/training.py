"""Local training and evaluation loops shared by the ClientApp and central evaluation.

Data lives in memory as tensors; batches are drawn by index with a seeded generator, which is
both faster than a DataLoader for these sizes and reproducible bit for bit on CPU.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsys.config import TrainConfig


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of ints (run seed, round, partition, ...)."""
    return (
        int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(2, np.uint64)[0])
        >> 1
    )


def select_device(preference: str) -> torch.device:
    """CUDA, else MPS, else CPU for ``auto``; an explicit choice must be available."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device='cuda' but CUDA is not available on this node")
    if preference == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("train.device='mps' but MPS is not available on this node")
    return torch.device(preference)


@dataclass(frozen=True)
class TrainResult:
    """What a client reports about its local work."""

    num_examples: int
    train_loss: float
    steps: int
    seconds: float


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    num_examples: int


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )


def train_local(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    proximal_mu: float = 0.0,
    work_fraction: float = 1.0,
) -> TrainResult:
    """Run ``cfg.local_epochs`` of minibatch training, or ``work_fraction`` of it (stragglers).

    With ``proximal_mu > 0`` the FedProx term mu/2 * ||w - w_global||^2 is added through its
    gradient mu * (w - w_global), which is cheaper than building it into the loss.
    """
    start = time.perf_counter()
    model.to(device)
    model.train()
    x, y = x.to(device), y.to(device)
    anchors = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    optimizer = _make_optimizer(model, cfg)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    n = len(y)
    batches_per_epoch = max(1, -(-n // cfg.batch_size))
    budget = max(1, round(work_fraction * cfg.local_epochs * batches_per_epoch))
    if cfg.max_steps is not None:
        budget = min(budget, cfg.max_steps)
    use_amp = cfg.amp and device.type == "cuda"
    # fp16 autocast needs loss scaling; the scaler is a no-op when AMP is off.
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)

    steps, loss_sum, seen = 0, 0.0, 0
    while steps < budget:
        order = torch.randperm(n, generator=generator).to(device)
        for begin in range(0, n, cfg.batch_size):
            if steps >= budget:
                break
            idx = order[begin : begin + cfg.batch_size]
            xb, yb = x[idx], y[idx]
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, enabled=use_amp):
                loss = loss_fn(model(xb), yb)
            scaler.scale(loss).backward()
            if anchors:
                scaler.unscale_(optimizer)  # the proximal gradient is added unscaled
                with torch.no_grad():
                    for p, anchor in zip(model.parameters(), anchors, strict=True):
                        if p.grad is not None:
                            p.grad.add_(p.detach() - anchor, alpha=proximal_mu)
            scaler.step(optimizer)
            scaler.update()
            steps += 1
            loss_sum += float(loss.detach()) * len(yb)
            seen += len(yb)
    return TrainResult(
        num_examples=n,
        train_loss=loss_sum / max(seen, 1),
        steps=steps,
        seconds=time.perf_counter() - start,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, device: torch.device
) -> EvalResult:
    """Mean cross-entropy and accuracy of ``model`` on (x, y)."""
    model.to(device)
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total_loss, correct = 0.0, 0
    for begin in range(0, len(y), batch_size):
        xb = x[begin : begin + batch_size].to(device)
        yb = y[begin : begin + batch_size].to(device)
        logits = model(xb)
        total_loss += float(loss_fn(logits, yb))
        correct += int((logits.argmax(dim=1) == yb).sum())
    n = max(len(y), 1)
    return EvalResult(loss=total_loss / n, accuracy=correct / n, num_examples=len(y))


def state_delta(
    local: Mapping[str, torch.Tensor],
    base: Mapping[str, torch.Tensor],
    *,
    overwrite_base: bool = False,
) -> dict[str, torch.Tensor]:
    """``local - base`` for every entry; what a client sends instead of its weights.

    With ``overwrite_base`` the difference is written into ``base``'s own (CPU) tensors, which
    saves allocating a model-sized buffer per round (at 10M parameters that is 40 MB of fresh
    pages, about as costly as the subtraction itself).
    """
    if not overwrite_base:
        return {k: (local[k].detach().cpu() - base[k].cpu()) for k in base}
    out: dict[str, torch.Tensor] = {}
    for k, b in base.items():
        if b.device.type != "cpu":
            raise ValueError(f"overwrite_base needs CPU tensors; {k!r} is on {b.device}")
        out[k] = torch.sub(local[k].detach().cpu(), b, out=b)
    return out
