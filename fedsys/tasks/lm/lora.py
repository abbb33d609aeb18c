"""LoRA adapters with ``peft``, and the state that travels for each aggregation variant.

``peft`` builds and runs the adapters; this module decides their initialisation (seeded, so the
server and every client start from the same A without sending it) and which tensors travel:

- fedit, hetlora: every ``lora_A`` and ``lora_B`` (FedAvg averages A and B separately);
- ffa: only ``lora_B``; A stays frozen at the shared seeded initialisation (FFA-LoRA);
- full: no adapters, the whole model's state (full fine-tuning, for comparison).

Keys are peft's saved-adapter names (``...q_proj.lora_A.weight``), so a travelling state is
also a valid ``adapter_model.safetensors``.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from fedsys.lm_config import InitA, LoRAConfig

ADAPTER = "default"


def attach_lora(base: nn.Module, cfg: LoRAConfig, seed: int) -> nn.Module:
    """Wrap ``base`` (in place, as peft does) with adapters of rank ``cfg.rank``; A seeded, B 0.

    With ``full`` nothing is wrapped and every weight trains.
    """
    if cfg.aggregation == "full":
        for p in base.parameters():
            p.requires_grad_(True)
        return base
    from peft import LoraConfig, get_peft_model

    peft_cfg = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,  # type: ignore[arg-type]  # peft accepts floats
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft asks transformers a question it has renamed
        warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
        model = get_peft_model(base, peft_cfg)  # type: ignore[arg-type]
    seeded_init(model, seed, cfg.a_init())
    if cfg.aggregation == "ffa":
        for name, p in model.named_parameters():
            if ".lora_A." in name:
                p.requires_grad_(False)
    return model  # type: ignore[no-any-return]


def _travel_name(param_name: str) -> str:
    return param_name.replace(f".{ADAPTER}.", ".")


def adapter_parameters(model: nn.Module, aggregation: str) -> dict[str, nn.Parameter]:
    """The parameters that travel, under their saved-adapter names, in name order."""
    if aggregation == "full":
        return dict(sorted(model.named_parameters()))
    wanted = (".lora_B.",) if aggregation == "ffa" else (".lora_A.", ".lora_B.")
    return {
        _travel_name(n): p
        for n, p in sorted(model.named_parameters())
        if any(w in n for w in wanted)
    }


def seeded_init(model: nn.Module, seed: int, init_a: InitA = "kaiming") -> None:
    """A from a generator seeded per tensor; B: zeros.

    ``kaiming``: peft's default law (Kaiming-uniform). ``orthogonal``: orthonormal rows (QR of
    a Gaussian, ``nn.init.orthogonal_``) scaled to Kaiming-uniform's expected Frobenius norm,
    sqrt(rank / 3), so the effective learning rate is comparable. With A frozen (FFA-LoRA) the
    adapter moves by ΔB·A = -lr·G·Aᵀ·A: an orthogonal A makes Aᵀ·A a scaled projection instead
    of a random distortion of the gradient G. Every node computes the same A from the run
    seed, which is what lets FFA-LoRA keep A off the wire and makes FedIT's round-0 adapter
    reproducible."""
    generator = torch.Generator()
    with torch.no_grad():
        for index, (name, p) in enumerate(sorted(model.named_parameters())):
            if ".lora_A." in name:
                generator.manual_seed(seed * 1_000_003 + index)
                if init_a == "orthogonal":
                    nn.init.orthogonal_(p, generator=generator)
                    p.mul_(math.sqrt(p.shape[0] / 3) / p.norm())
                else:
                    nn.init.kaiming_uniform_(p, a=math.sqrt(5), generator=generator)
            elif ".lora_B." in name:
                p.zero_()


def travelling_state(model: nn.Module, aggregation: str) -> dict[str, torch.Tensor]:
    """A detached CPU copy of what travels (the global model's template on the server)."""
    return {k: p.detach().cpu().clone() for k, p in adapter_parameters(model, aggregation).items()}


def load_travelling_state(
    model: nn.Module, state: dict[str, torch.Tensor], aggregation: str
) -> None:
    """Copy ``state`` into the model's travelling parameters; names and shapes must match."""
    params = adapter_parameters(model, aggregation)
    if set(params) != set(state):
        missing = sorted(set(params) - set(state))[:3]
        extra = sorted(set(state) - set(params))[:3]
        raise ValueError(f"adapter state does not match: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(state[k])


def truncate_rank(state: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """HetLoRA: keep the first ``rank`` components (rows of A, columns of B), zero the rest.

    Zero components receive zero gradients (each is the other factor's product with zeros),
    so a truncated adapter trains at its own rank inside the global rank's tensors, and its
    update is zero-padded by construction."""
    out: dict[str, torch.Tensor] = {}
    for k, t in state.items():
        t = t.clone()
        if ".lora_A." in k:
            t[rank:, :] = 0
        elif ".lora_B." in k:
            t[:, rank:] = 0
        out[k] = t
    return out


def client_rank(cfg: LoRAConfig, partition_id: int) -> int:
    """The rank a client trains at: ``client_ranks`` in turn (hetlora), else ``rank``."""
    if cfg.aggregation == "hetlora" and cfg.client_ranks:
        return cfg.client_ranks[partition_id % len(cfg.client_ranks)]
    return cfg.rank
