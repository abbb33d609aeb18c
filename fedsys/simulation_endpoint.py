"""The endpoint beside a simulation: serve the run's registry while it trains, then send the
test set through it over HTTP and write ``served_accuracy`` next to ``final_accuracy``.

The test set goes through the endpoint in the same chunks central evaluation uses
(``train.eval_batch_size``), one request at a time, so the served model computes exactly
what the ServerApp computed and the two accuracies agree to the last digit (on CPU).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

from fedsys.config import ExperimentConfig
from fedsys.errors import FedsysError
from fedsys.server.progress import stage
from fedsys.server.records import RunSummary, write_json
from fedsys.serving.endpoint_settings import ServeSettings
from fedsys.serving.runner import BackgroundServer, free_port, serve_process

log = logging.getLogger("fedsys")

READY_TIMEOUT = 30.0  # seconds for the endpoint to pick up the final publish


def registry_dir(cfg: ExperimentConfig, out_dir: Path) -> Path:
    """Where a run publishes and serves: ``publish.registry``, else ``<out>/registry``."""
    return cfg.publish.registry or out_dir / "registry"


def _settings(cfg: ExperimentConfig, out_dir: Path, port: int) -> ServeSettings:
    return ServeSettings(
        registry=registry_dir(cfg, out_dir),
        host=cfg.serve.host,
        port=port,
        workers=cfg.serve.workers,
        max_batch_size=cfg.serve.max_batch_size,
        max_wait_ms=cfg.serve.max_wait_ms,
        max_instances=max(1024, cfg.train.eval_batch_size),
        # one thread in the simulation's process: leave the process-wide settings alone
        torch_threads=None,
        switch_interval_s=None,
        freeze_gc=False,
        default_variant=None
        if cfg.compress.default_variant == "fp32"
        else cfg.compress.default_variant,
    )


def _worker_processes(settings: ServeSettings) -> contextlib.AbstractContextManager[str]:
    """``fedsys serve`` with several workers in its own process group, ended on exit."""
    args = ["--registry", str(settings.registry), "--workers", str(settings.workers)]
    args += ["--max-batch-size", str(settings.max_batch_size)]
    args += ["--max-wait-ms", str(settings.max_wait_ms)]
    port = settings.port or free_port(settings.host)
    return serve_process(args, host=settings.host, port=port)


@contextlib.contextmanager
def endpoint_for(cfg: ExperimentConfig, out_dir: Path) -> Iterator[str | None]:
    """The endpoint's URL while the block runs (None when serve.enabled is off)."""
    if not cfg.serve.enabled:
        yield None
        return
    settings = _settings(cfg, out_dir, cfg.serve.port)
    if settings.workers > 1:
        with _worker_processes(settings) as url:
            stage(f"serving {settings.registry} at {url} ({settings.workers} workers)")
            yield url
        return
    with BackgroundServer(settings) as server:
        stage(f"serving {settings.registry} at {server.url}")
        yield server.url


def wait_for_active(client: httpx.Client, name: str, timeout: float) -> int:
    """The active version once the endpoint serves it (publishes land within a poll)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get(f"/v1/models/{name}")
        if resp.status_code == 200:
            info = resp.json()
            active = info["active_version"]
            if active is not None and info["served_version"] == active:
                return int(active)
        if time.monotonic() > deadline:
            raise FedsysError(
                f"the endpoint does not serve an active version of {name!r} "
                f"(last answer {resp.status_code}: {resp.text[:200]})"
            )
        time.sleep(0.05)


def served_accuracy(
    url: str, name: str, x: np.ndarray, y: np.ndarray, chunk: int
) -> tuple[float, int]:
    """(accuracy, version) of the model ``url`` serves as ``name`` on (x, y), over HTTP."""
    with httpx.Client(base_url=url, timeout=60.0) as client:
        version = wait_for_active(client, name, READY_TIMEOUT)
        correct = 0
        for begin in range(0, len(y), chunk):
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(x[begin : begin + chunk], dtype=np.float32))
            resp = client.post(
                f"/v1/models/{name}:predict",
                content=buf.getvalue(),
                headers={"Content-Type": "application/x-npy"},
            )
            if resp.status_code != 200:
                raise FedsysError(f"predict failed with {resp.status_code}: {resp.text[:200]}")
            body = resp.json()
            if body["version"] != version:
                raise FedsysError(
                    f"the served version moved from {version} to {body['version']} mid-test"
                )
            correct += int((np.asarray(body["predictions"]) == y[begin : begin + chunk]).sum())
    return correct / max(len(y), 1), version


def close_loop(cfg: ExperimentConfig, out_dir: Path, url: str) -> RunSummary | None:
    """Send the test set through the endpoint; add served_accuracy/version to summary.json
    (a language model: served_perplexity, see ``simulation_served_lm``)."""
    if cfg.task == "language_model":
        from fedsys.simulation_served_lm import close_lm_loop

        return close_lm_loop(cfg, out_dir, url)
    from fedsys.data import load_dataset

    path = out_dir / "summary.json"
    if not path.exists():
        return None
    summary = RunSummary.model_validate(json.loads(path.read_text()))
    _, test, _ = load_dataset(cfg.data, cfg.runtime.seed)
    chunk = cfg.train.eval_batch_size  # the chunks central evaluation used
    stage(f"sending the test set ({len(test.y)} samples) through the endpoint at {url}")
    try:
        accuracy, version = served_accuracy(url, cfg.name, test.x, test.y, chunk)
    except (FedsysError, httpx.HTTPError) as exc:
        log.error("served accuracy not measured: %s", exc)
        return summary
    summary = summary.model_copy(update={"served_accuracy": accuracy, "served_version": version})
    write_json(path, summary)
    if accuracy != summary.final_accuracy:
        log.warning(
            "served accuracy %.4f (version %d) differs from final accuracy %.4f: with "
            "publish.mode=%s the served version need not be the final model",
            accuracy,
            version,
            summary.final_accuracy,
            cfg.publish.mode,
        )
    return summary
