"""Build one of Flower's own message-API strategies from the ``strategy`` config section."""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import (
    Bulyan,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
)

from fedsys.config import StrategyConfig, TrainConfig
from fedsys.errors import ConfigError


def _common(cfg: StrategyConfig) -> dict[str, Any]:
    # Federated (client-side) evaluation is replaced by central evaluation after every round;
    # fedsys never calls configure_evaluate, so fraction_evaluate only silences a warning.
    return {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": 1.0,
        "min_train_nodes": cfg.min_train_nodes,
        "min_evaluate_nodes": 1,
        "min_available_nodes": cfg.min_available_nodes,
    }


def build_strategy(cfg: StrategyConfig, train: TrainConfig, num_clients: int) -> Strategy:
    """The configured Flower strategy, wrapped in Flower's server-side DP when asked.

    Flower's constructors reject some parameter combinations with ValueError; those become a
    ConfigError naming the section, so the CLI can refuse them before anything starts.
    """
    try:
        return _build(cfg, train, num_clients)
    except ValueError as exc:
        raise ConfigError(f"invalid experiment config:\n  strategy: {exc}") from None


def _build(cfg: StrategyConfig, train: TrainConfig, num_clients: int) -> Strategy:
    common = _common(cfg)
    opt: dict[str, Any] = {"eta": cfg.server_lr, "eta_l": train.lr, "tau": cfg.tau}
    betas: dict[str, Any] = {"beta_1": cfg.beta_1, "beta_2": cfg.beta_2}
    strategy: Strategy
    match cfg.name:
        case "fedavg":
            strategy = FedAvg(**common)
        case "fedprox":
            strategy = FedProx(**common, proximal_mu=cfg.proximal_mu)
        case "fedavgm":
            strategy = FedAvgM(
                **common, server_learning_rate=cfg.server_lr, server_momentum=cfg.server_momentum
            )
        case "fedadam":
            strategy = FedAdam(**common, **opt, **betas)
        case "fedyogi":
            strategy = FedYogi(**common, **opt, **betas)
        case "fedadagrad":
            strategy = FedAdagrad(**common, **opt)
        case "fedmedian":
            strategy = FedMedian(**common)
        case "fedtrimmedavg":
            strategy = FedTrimmedAvg(**common, beta=cfg.trim_beta)
        case "krum":
            strategy = Krum(**common, num_malicious_nodes=cfg.num_malicious_nodes)
        case "multikrum":
            strategy = MultiKrum(
                **common,
                num_malicious_nodes=cfg.num_malicious_nodes,
                num_nodes_to_select=cfg.num_nodes_to_select,
            )
        case "bulyan":
            strategy = Bulyan(**common, num_malicious_nodes=cfg.num_malicious_nodes)
        case _:  # pragma: no cover - the config's Literal makes this unreachable
            raise ConfigError(f"strategy.name: unknown strategy {cfg.name!r}")
    if cfg.dp is None:
        return strategy
    sampled = max(int(num_clients * cfg.fraction_train), cfg.min_train_nodes)
    if cfg.dp.kind == "fixed":
        return DifferentialPrivacyServerSideFixedClipping(
            strategy,
            noise_multiplier=cfg.dp.noise_multiplier,
            clipping_norm=cfg.dp.clipping_norm,
            num_sampled_clients=sampled,
        )
    return DifferentialPrivacyServerSideAdaptiveClipping(
        strategy,
        noise_multiplier=cfg.dp.noise_multiplier,
        num_sampled_clients=sampled,
        initial_clipping_norm=cfg.dp.clipping_norm,
        clipped_count_stddev=cfg.dp.clipped_count_stddev,
    )
