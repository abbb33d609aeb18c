"""Tasks: what is learned (classification, language modelling) behind one interface.

``task_for(cfg)`` returns this process's task object for a config (built once; it holds the
data and the model a simulation worker's virtual clients share). Heavy libraries
(transformers, peft) are imported only when a language-model task is built.
"""

from __future__ import annotations

import functools
import threading

from fedsys.config import ExperimentConfig, RuntimeConfig, StrategyConfig, TrainConfig
from fedsys.tasks.base import ClientData, Metrics, Task

__all__ = ["ClientData", "Metrics", "Task", "task_for"]

_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _build(config_json: str) -> Task:
    cfg = ExperimentConfig.model_validate_json(config_json)
    if cfg.task == "language_model":
        from fedsys.tasks.lm.task import LanguageModelTask

        return LanguageModelTask(cfg)
    from fedsys.tasks.classification import ClassificationTask

    return ClassificationTask(cfg)


def _key(cfg: ExperimentConfig) -> str:
    """The settings a task's data and model depend on; the rest (rounds, codec, the server's
    stamp of the base hash, where node state lives...) does not rebuild them."""
    lm = cfg.lm.model_copy(update={"base_sha256": None})
    train = TrainConfig(eval_batch_size=cfg.train.eval_batch_size, device=cfg.train.device)
    kept = ExperimentConfig(
        task=cfg.task,
        data=cfg.data,
        model=cfg.model,
        lm=lm,
        federated_eval=cfg.federated_eval,  # what a client holds back from training
        train=train,
        runtime=RuntimeConfig(seed=cfg.runtime.seed),
        strategy=StrategyConfig(min_train_nodes=1, min_available_nodes=1),
    )
    return kept.to_json()


def task_for(cfg: ExperimentConfig) -> Task:
    """The task for ``cfg``, one object per distinct data-and-model settings in this process
    (a worker's virtual clients share it, and with it the model and the frozen base)."""
    with _LOCK:
        return _build(_key(cfg))


def clear_tasks() -> None:
    """Forget every task object (tests; long-lived processes)."""
    with _LOCK:
        _build.cache_clear()
