"""Local training: seeded and deterministic; FedProx stays near the anchor; stragglers do less."""

from __future__ import annotations

import torch
from torch import nn

from fedsys.config import TrainConfig
from fedsys.training import derive_seed, evaluate, select_device, state_delta, train_local


def _problem() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=gen)
    y = (x[:, 0] > 0).long()
    return x, y


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))


def test_same_seed_same_weights_and_learning_happens() -> None:
    x, y = _problem()
    cfg = TrainConfig(local_epochs=3, batch_size=16, lr=0.1)
    device = torch.device("cpu")
    a, b = _model(), _model()
    before = evaluate(a, x, y, batch_size=64, device=device)
    res = train_local(a, x, y, cfg, seed=5, device=device)
    train_local(b, x, y, cfg, seed=5, device=device)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    after = evaluate(a, x, y, batch_size=64, device=device)
    assert after.loss < before.loss and after.accuracy > 0.9
    assert res.steps == 3 * 16 and res.num_examples == 256


def test_proximal_term_keeps_weights_closer_to_the_global_model() -> None:
    x, y = _problem()
    cfg = TrainConfig(local_epochs=5, batch_size=16, lr=0.1, momentum=0.0)
    device = torch.device("cpu")
    distances = []
    for mu in (0.0, 1.0):
        model = _model()
        start = {k: v.clone() for k, v in model.state_dict().items()}
        train_local(model, x, y, cfg, seed=1, device=device, proximal_mu=mu)
        delta = state_delta(model.state_dict(), start)
        distances.append(sum(float(d.norm() ** 2) for d in delta.values()))
    assert distances[1] < 0.8 * distances[0]


def test_stragglers_do_a_fraction_of_the_steps() -> None:
    x, y = _problem()
    cfg = TrainConfig(local_epochs=4, batch_size=32)
    res = train_local(_model(), x, y, cfg, seed=1, device=torch.device("cpu"), work_fraction=0.25)
    assert res.steps == 8
    capped = TrainConfig(local_epochs=4, batch_size=32, max_steps=3)
    res = train_local(_model(), x, y, capped, seed=1, device=torch.device("cpu"))
    assert res.steps == 3


def test_device_and_seed_helpers() -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in {"cpu", "cuda", "mps"}
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3) != derive_seed(1, 2, 4)
    assert 0 <= derive_seed(7) < 2**63
