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

TEACHER_BATCH = 1024


def student_config(teacher: ModelConfig, student: StudentConfig) -> ModelConfig:
    """The student's architecture: the named fields, else the teacher's scaled down."""

    def scaled(width: int) -> int:
        return max(1, math.ceil(width * student.width_factor))

    return ModelConfig(
        name=student.name or teacher.name,
        channels=student.channels or scaled(teacher.channels),
        hidden=[scaled(h) for h in teacher.hidden] if student.hidden is None else student.hidden,
    )


def soft_targets(teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The teacher's logits on ``x``, computed once (the teacher does not change)."""
    teacher.eval()
    with torch.inference_mode():
        parts = [teacher(x[i : i + TEACHER_BATCH]) for i in range(0, len(x), TEACHER_BATCH)]
    return torch.cat(parts)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
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
    hard = F.cross_entropy(student_logits, labels)
    return alpha * t * t * soft + (1.0 - alpha) * hard


def fit(
    student: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    teacher_logits: torch.Tensor | None,
    epochs: int,
    lr: float,
    batch_size: int,
    temperature: float,
    alpha: float,
    seed: int,
) -> nn.Module:
    """Train ``student`` in place on (x, y); with ``teacher_logits`` None, on hard labels only."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    student.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for begin in range(0, len(y), batch_size):
            idx = order[begin : begin + batch_size]
            logits = student(x[idx])
            if teacher_logits is None:
                loss = F.cross_entropy(logits, y[idx])
            else:
                loss = distillation_loss(logits, teacher_logits[idx], y[idx], temperature, alpha)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    return student.eval()
