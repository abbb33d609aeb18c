"""Rules that span sections of an experiment config, checked once every section is valid.

Each takes the whole config and raises ``ValueError`` naming the keys at fault; the two
``apply_`` rules also fill a default that depends on another section. ``ExperimentConfig``
runs them in the order of ``CROSS_SECTION_RULES``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fedsys.strategy_traits import STRATEGY_TRAITS, names_where

if TYPE_CHECKING:
    from fedsys.config import ExperimentConfig


def check_task(cfg: ExperimentConfig) -> None:
    """Each task reads its own sections: settings of the other one are a mistake."""
    if cfg.task == "language_model":
        # compared with the defaults, not fields set: a config survives a JSON round trip
        data, model = type(cfg.data)(), type(cfg.model)()
        stray = [
            f"data.{k}"
            for k in type(cfg.data).model_fields
            if k != "num_partitions" and getattr(cfg.data, k) != getattr(data, k)
        ]
        stray += [
            f"model.{k}"
            for k in type(cfg.model).model_fields
            if getattr(cfg.model, k) != getattr(model, k)
        ]
        if stray:
            raise ValueError(
                f"task 'language_model' reads its data and model from the lm section; "
                f"remove {', '.join(stray)}"
            )
        if cfg.publish.int8_copy and not cfg.publish.merge:
            raise ValueError(
                "publish.int8_copy quantizes a whole model: with task 'language_model' "
                "it needs publish.merge=true (an adapter alone has no int8 copy)"
            )
    elif cfg.lm != type(cfg.lm)():
        raise ValueError("the lm section needs task: language_model")


def check_strategy(cfg: ExperimentConfig) -> None:
    """What the strategy section asks must be possible with the population it has."""
    n = cfg.data.num_partitions
    if cfg.strategy.min_available_nodes > n:
        raise ValueError(
            f"strategy.min_available_nodes ({cfg.strategy.min_available_nodes}) exceeds "
            f"data.num_partitions ({n}): the run would wait forever"
        )
    if cfg.strategy.min_train_nodes > n:
        raise ValueError(
            f"strategy.min_train_nodes ({cfg.strategy.min_train_nodes}) exceeds "
            f"data.num_partitions ({n})"
        )
    if cfg.strategy.name == "fedprox" and cfg.strategy.proximal_mu == 0.0:
        raise ValueError("strategy.proximal_mu must be > 0 for fedprox (0 is plain FedAvg)")
    if cfg.strategy.dp is not None and not STRATEGY_TRAITS[cfg.strategy.name].dp_compatible:
        raise ValueError(
            f"strategy.dp cannot wrap the robust strategy {cfg.strategy.name!r}: "
            "Flower's DP wrappers assume a weighted average"
        )


def apply_serve(cfg: ExperimentConfig) -> None:
    """Serving needs something published: serve.enabled turns publishing on at the end
    of the run unless publish.mode was set; an explicit publish.mode=never is an error."""
    if not cfg.serve.enabled or cfg.publish.mode != "never":
        return
    if "mode" in cfg.publish.model_fields_set:
        raise ValueError(
            "serve.enabled needs a published model, but publish.mode is 'never' "
            "(use at_end, every_round or on_improvement)"
        )
    cfg.publish.mode = "at_end"


def apply_compress(cfg: ExperimentConfig) -> None:
    """Compression tunes on the server's public split: compress.enabled holds back 10% of
    the training set unless data.public_fraction or data.public_path says otherwise. A
    language model's public text is lm.text's own split, so data's is not needed."""
    if not cfg.compress.enabled or cfg.data.public_path is not None:
        return
    if cfg.task == "language_model":
        return
    if cfg.data.public_fraction > 0:
        return
    if "public_fraction" in cfg.data.model_fields_set:
        raise ValueError(
            "compress.enabled needs a public split, but data.public_fraction is 0 "
            "(set it, e.g. 0.1, or data.public_path)"
        )
    cfg.data.public_fraction = 0.1


def check_fedbuff(cfg: ExperimentConfig) -> None:
    """FedBuff applies a buffer of example-weighted deltas itself: refuse what cannot be
    buffered that way, with the reason."""
    if not cfg.fedbuff.enabled:
        return
    if cfg.secagg.enabled:
        raise ValueError(
            "fedbuff.enabled: secure aggregation masks one fixed cohort that starts and "
            "ends together (its pairwise masks cancel only in that cohort's sum), while "
            "FedBuff's buffer fills with clients that started at different server "
            "versions; turn one of them off (codec.encrypt still seals each update)"
        )
    if cfg.strategy.name not in ("fedavg", "fedprox") or cfg.strategy.dp is not None:
        raise ValueError(
            f"fedbuff.enabled: strategy {cfg.strategy.name!r}"
            f"{' with strategy.dp' if cfg.strategy.dp is not None else ''} cannot run "
            "asynchronously; FedBuff applies a staleness-weighted mean of deltas, so use "
            "strategy.name fedavg or fedprox (server_lr is fedbuff.server_lr)"
        )
    if cfg.fedbuff.concurrency > cfg.data.num_partitions:
        raise ValueError(
            f"fedbuff.concurrency ({cfg.fedbuff.concurrency}) exceeds data.num_partitions "
            f"({cfg.data.num_partitions})"
        )


def check_secagg(cfg: ExperimentConfig) -> None:
    """Secure aggregation hides individual updates: refuse what needs to see them."""
    if not cfg.secagg.enabled:
        return
    fix = "clip on the clients instead (codec.clip_norm)"
    if not STRATEGY_TRAITS[cfg.strategy.name].secagg_compatible:
        *others, last = names_where(lambda t: t.secagg_compatible)
        raise ValueError(
            f"secagg.enabled: strategy {cfg.strategy.name!r} needs every client's update, "
            f"but secure aggregation reveals only their sum; use {', '.join(others)} or "
            f"{last}, and {fix} to bound each client's influence"
        )
    if cfg.strategy.dp is not None:
        raise ValueError(
            "secagg.enabled: strategy.dp (Flower's server-side DP) clips each client's "
            f"update on the server, which never sees one under secure aggregation; {fix}"
        )
    if cfg.codec.max_norm is not None:
        raise ValueError(
            "secagg.enabled: codec.max_norm checks each update's norm on the server, which "
            f"sees only the masked sum; remove it and {fix}"
        )
    if cfg.codec.topk is not None:
        raise ValueError(
            "secagg.enabled: codec.topk sends different positions per client, which leak "
            "and cannot be summed under masks; remove codec.topk (quantization still "
            "applies, see secagg.quant_bits)"
        )
    if cfg.codec.encrypt:
        raise ValueError(
            "secagg.enabled: codec.encrypt seals each update to the server, but masked "
            "updates are already unreadable to it; set codec.encrypt=false"
        )
    if cfg.codec.clip_norm is None:
        raise ValueError(
            "secagg.enabled requires codec.clip_norm: the sum is quantized with one global "
            "scale, and client-side clipping is what bounds every value (and each "
            "client's influence, since the server cannot check updates)"
        )
    bits = cfg.secagg.bits
    quant = cfg.secagg.resolved_quant_bits(cfg.codec)
    if quant > bits:
        raise ValueError(
            f"secagg: quantization width {quant} (from codec.quantize="
            f"{cfg.codec.quantize!r}) exceeds secagg.bits ({bits}); set secagg.quant_bits"
        )
    reason = type(cfg.secagg).wrap_error(cfg.data.num_partitions, bits, quant)
    if reason is not None:
        raise ValueError(f"secagg: the sum could wrap around: {reason}")


CROSS_SECTION_RULES: tuple[Callable[[ExperimentConfig], None], ...] = (
    check_task,
    check_strategy,
    apply_serve,
    apply_compress,
    check_fedbuff,
    check_secagg,
)
