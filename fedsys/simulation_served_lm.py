"""The endpoint beside a language-model simulation: send the held-out text through
``POST /v1/completions`` and write ``served_perplexity`` next to ``final_perplexity``.

Each request scores a batch of the central evaluation's own chunks (token ids, the same
``seq_len`` windows, the same batches) with the OpenAI API's prompt scoring: ``echo: true``,
``max_tokens: 0``, ``logprobs: 0``; the negative sum of ``token_logprobs`` (the first token of
each chunk has none, as in central evaluation) over the number of scored tokens is the loss,
its exponential the perplexity. Same tokens, same context, same weights: the two figures
differ only by floating-point summation order (a LoRA adapter applied per row by peft's
mixed-batch forward, or folded into merged weights, versus the training module), well
within ``AGREEMENT`` relative.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import httpx
import numpy as np

from fedsys.config import ExperimentConfig
from fedsys.errors import FedsysError
from fedsys.server.progress import stage
from fedsys.server.records import RunSummary, write_json

log = logging.getLogger("fedsys")

AGREEMENT = 1e-4  # relative; what served and central perplexity must agree to
SCORE_TIMEOUT = 300.0  # seconds per scoring request (a batch of chunks on a busy CPU)


def served_perplexity(
    url: str, model: str, chunks: np.ndarray, batch: int
) -> tuple[float, float, int]:
    """(perplexity, loss in nats per token, tokens scored) of ``chunks`` through ``url``."""
    total, tokens = 0.0, 0
    with httpx.Client(base_url=url, timeout=SCORE_TIMEOUT) as client:
        for begin in range(0, len(chunks), batch):
            prompts = np.asarray(chunks[begin : begin + batch]).tolist()
            body = {"model": model, "prompt": prompts, "echo": True, "max_tokens": 0}
            resp = client.post("/v1/completions", json={**body, "logprobs": 0})
            if resp.status_code != 200:
                raise FedsysError(f"scoring failed with {resp.status_code}: {resp.text[:200]}")
            answer = resp.json()
            if answer["model"] != model:
                raise FedsysError(f"{answer['model']} answered a request for {model}")
            for choice in answer["choices"]:
                scored = choice["logprobs"]["token_logprobs"][1:]
                total -= math.fsum(scored)
                tokens += len(scored)
    loss = total / max(tokens, 1)
    return math.exp(min(loss, 700.0)), loss, tokens


def close_lm_loop(cfg: ExperimentConfig, out_dir: Path, url: str) -> RunSummary | None:
    """Score the central held-out chunks through the endpoint; add served_perplexity,
    served_loss and served_version to summary.json."""
    from fedsys.simulation_endpoint import READY_TIMEOUT, wait_for_active
    from fedsys.tasks import task_for
    from fedsys.tasks.lm.task import EVAL_BATCH

    path = out_dir / "summary.json"
    if not path.exists():
        return None
    summary = RunSummary.model_validate(json.loads(path.read_text()))
    chunks = task_for(cfg).central_data()
    batch = min(cfg.train.eval_batch_size, EVAL_BATCH)  # the batches central evaluation used
    stage(f"scoring the held-out text ({len(chunks)} chunks) through the endpoint at {url}")
    try:
        with httpx.Client(base_url=url, timeout=60.0) as client:
            version = wait_for_active(client, cfg.name, READY_TIMEOUT)
        perplexity, loss, _ = served_perplexity(url, f"{cfg.name}@{version}", chunks, batch)
    except (FedsysError, httpx.HTTPError, KeyError, TypeError) as exc:
        log.error("served perplexity not measured: %s", exc)
        return summary
    update = {"served_perplexity": perplexity, "served_loss": loss, "served_version": version}
    summary = summary.model_copy(update=update)
    write_json(path, summary)
    central = summary.final_perplexity
    if central is None or abs(perplexity - central) > AGREEMENT * central:
        log.warning(
            "served perplexity %.6f (version %d) differs from the central %s: with "
            "publish.mode=%s the served version need not be the final model",
            perplexity,
            version,
            "(none)" if central is None else f"{central:.6f}",
            cfg.publish.mode,
        )
    return summary
