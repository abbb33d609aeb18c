"""Tasks: what is learned (classification, language modelling) behind one interface.

``task_for(cfg)`` returns this process's task object for a config (built once; it holds the
data and the model a simulation worker's virtual clients share). Heavy libraries
(transformers, peft) are imported only when a language-model task is built.
"""

from __future__ import annotations

import functools
import threading

from fedsys.config import ExperimentConfig
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


def task_for(cfg: ExperimentConfig) -> Task:
    """The task for ``cfg``, one object per distinct config in this process."""
    if cfg.lm.base_sha256 is not None:  # the server's stamp; the same task otherwise
        cfg = cfg.model_copy(update={"lm": cfg.lm.model_copy(update={"base_sha256": None})})
    with _LOCK:
        return _build(cfg.to_json())


def clear_tasks() -> None:
    """Forget every task object (tests; long-lived processes)."""
    with _LOCK:
        _build.cache_clear()
