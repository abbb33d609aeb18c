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
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels), the
    cross-entropy over rows whose label is not ``UNLABELLED``."""
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    labelled = labels is not None and bool((labels != UNLABELLED).any())
    if labels is None or not labelled or alpha == 1.0:
        return t * t * soft
    hard = F.cross_entropy(student_logits, labels, ignore_index=UNLABELLED)
    return alpha * t * t * soft + (1.0 - alpha) * hard


UNLABELLED = -1
TEACHER_BATCH = 1024


def transfer_set(
    teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, copies: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(inputs, labels, teacher logits)``: the public rows, then ``copies`` rounds of convex
    mixtures of random pairs of them (mixup, Zhang et al. 2018) labelled ``UNLABELLED``.

    A small public split yields many more distinct inputs for the teacher to label this way;
    the teacher labels them all once, so each student epoch costs the student alone.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = [x], [y]
    for _ in range(copies):
        weight = torch.rand(len(x), generator=generator).view(-1, *([1] * (x.dim() - 1)))
        partner = x[torch.randperm(len(x), generator=generator)]
        inputs.append(weight * x + (1 - weight) * partner)
        labels.append(torch.full_like(y, UNLABELLED))
    rows = torch.cat(inputs)
    teacher.eval()
    with torch.inference_mode():
        logits = torch.cat(
            [teacher(rows[i : i + TEACHER_BATCH]) for i in range(0, len(rows), TEACHER_BATCH)]
        )
    return rows, torch.cat(labels), logits


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
    mixup_copies: int,
    seed: int,
) -> nn.Module:
    """Train ``student`` in place on (x, y); with ``teacher`` None, on hard labels only.

    With a teacher, the student learns from its soft labels on the transfer set (the public
    rows and ``mixup_copies`` rounds of mixtures); hard labels weigh in where rows have one.
    """
    soft: torch.Tensor | None = None
    if teacher is not None:
        x, y, soft = transfer_set(teacher, x, y, mixup_copies, seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    student.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for begin in range(0, len(y), batch_size):
            idx = order[begin : begin + batch_size]
            logits = student(x[idx])
            if soft is None:
                loss = F.cross_entropy(logits, y[idx])
            else:
                loss = distillation_loss(logits, soft[idx], y[idx], temperature, alpha)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    return student.eval()
