"""Knowledge distillation (Hinton, Vinyals and Dean 2015) on the server's public split.

The student learns from the teacher's softened outputs (softmax at temperature T, the KL
term scaled by T^2 so its gradients keep their size) mixed with the public labels. The same
loop, with the original model as teacher, is the recovery fine-tune after pruning or
factorisation.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from fedsys.compress.settings import StudentConfig
from fedsys.config import ModelConfig


def student_config(teacher: ModelConfig, student: StudentConfig) -> ModelConfig:
    """The student's architecture: the named fields, else the teacher's scaled down."""

    def scaled(width: int) -> int:
        return max(1, math.ceil(width * student.width_factor))

    return ModelConfig(
        name=student.name or teacher.name,
        channels=student.channels or scaled(teacher.channels),
        hidden=[scaled(h) for h in teacher.hidden] if student.hidden is None else student.hidden,
    )


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)."""
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    if labels is None or alpha == 1.0:
        return t * t * soft
    hard = F.cross_entropy(student_logits, labels)
    return alpha * t * t * soft + (1.0 - alpha) * hard


def _mixed(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Convex mixtures of random pairs of rows (mixup, Zhang et al. 2018) for the teacher to
    label: a small public split yields many more distinct transfer inputs this way."""
    weight = torch.rand(len(x), generator=generator).view(-1, *([1] * (x.dim() - 1)))
    partner = x[torch.randperm(len(x), generator=generator)]
    return weight * x + (1 - weight) * partner


def fit(
    student: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    teacher: nn.Module | None,
    epochs: int,
    lr: float,
    batch_size: int,
    temperature: float,
    alpha: float,
    mixup: bool,
    seed: int,
) -> nn.Module:
    """Train ``student`` in place on (x, y); with ``teacher`` None, on hard labels only.

    With a teacher and ``mixup``, every batch also carries as many mixed rows, which only the
    soft-label term sees (they have no label).
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    if teacher is not None:
        teacher.eval()
    student.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for begin in range(0, len(y), batch_size):
            idx = order[begin : begin + batch_size]
            xb, yb = x[idx], y[idx]
            if teacher is None:
                loss = F.cross_entropy(student(xb), yb)
            else:
                inputs = torch.cat([xb, _mixed(xb, generator)]) if mixup else xb
                with torch.no_grad():
                    targets = teacher(inputs)
                logits = student(inputs)
                soft = distillation_loss(logits, targets, None, temperature, 1.0)
                hard = F.cross_entropy(logits[: len(yb)], yb)
                loss = alpha * soft + (1.0 - alpha) * hard
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    return student.eval()
