"""Inference endpoint benchmark on loopback: latency, dynamic batching, hot swaps, int8.

    python simulations/bench_serving.py [--quick]

Starts real ``fedsys serve`` processes on 127.0.0.1 and drives them from this process with a
small asyncio HTTP/1.1 keep-alive client (hand-written: the load generator shares the
machine's cores with the server, and httpx costs several times more CPU per request).
Every phase is bounded in time. Writes ``simulations/results/bench_serving.json``:

  (a) MNIST-1D model (the quickstart's cnn1d), 1 worker, batch 1, sequential: p50/p99;
  (b) McMahan CNN (cnn_mnist, 1.66M parameters, random weights), 1 worker, 1/8/32/128
      concurrent clients, batching on (max batch 32) vs off (max batch 1): throughput, p50/p99;
  (c) 10,000 requests while 5 new versions are published over HTTP: failed requests;
  (d) int8 vs fp32 serving copy: size on disk, test accuracy, batch-1 latency;
  (e) 2 workers: time from a publish's answer until both workers serve the new version;
  (f) the Open Inference Protocol's ``infer`` (JSON and binary tensors) against ``:predict``
      at batch 1 on the MNIST-1D model, interleaved in blocks: p50/p99 and the p50 ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedsys.config import DataConfig, ModelConfig, TrainConfig
from fedsys.crypto import public_to_raw
from fedsys.data import load_dataset
from fedsys.data.types import DatasetInfo
from fedsys.models import build_model, count_parameters
from fedsys.registry.store import Registry
from fedsys.registry.version_manifest import Lineage
from fedsys.serving.runner import free_port, serve_process
from fedsys.training import evaluate, train_local

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "simulations" / "results" / "bench_serving.json"
HOST = "127.0.0.1"
TOKEN = "bench-token"
NPY_HEADERS = {"Content-Type": "application/x-npy"}


# --- a minimal keep-alive HTTP/1.1 client ------------------------------------------------------


class Conn:
    """One keep-alive connection; requests are pre-encoded bytes, responses need Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length)
        return status, body

    def close(self) -> None:
        self.writer.close()


def encode_request(path: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(x, dtype=np.float32))
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000.0 if values else float("nan")


# --- servers and registries --------------------------------------------------------------------


@contextlib.contextmanager
def server(registry: Path, *args: str) -> Iterator[int]:
    """``fedsys serve`` in its own process group; yields its port once a model is loaded."""
    port = free_port(HOST)
    env = {**os.environ, "FEDSYS_PUBLISH_TOKEN": TOKEN, "FLWR_TELEMETRY_ENABLED": "0"}
    with serve_process(
        ["--registry", str(registry), *args], host=HOST, port=port, ready_path="/readyz", env=env
    ):
        yield port


def new_registry(root: Path, key: Ed25519PrivateKey) -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    (root / "publisher.pub").write_bytes(public_to_raw(key.public_key()))
    return Registry(root)


def publish(
    registry: Registry,
    key: Ed25519PrivateKey,
    name: str,
    module: torch.nn.Module,
    model: ModelConfig,
    info: DatasetInfo,
    *,
    int8: bool = False,
    activate: bool = True,
    accuracy: float = 0.0,
    version: int | None = None,
) -> int:
    weights = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    manifest = registry.publish(
        name,
        weights,
        model=model.model_dump(mode="json"),
        input_shape=info.input_shape,
        num_classes=info.num_classes,
        round=0,
        metrics={"accuracy": accuracy},
        lineage=Lineage(clients=0, strategy="bench"),
        signing_key=key,
        int8_copy=int8,
        activate=activate,
        version=version,
    )
    return manifest.version


def version_parts(registry: Registry, name: str, version: int) -> dict[str, bytes]:
    vdir = registry.root / name / "versions" / str(version)
    return {
        "manifest": (vdir / "manifest.json").read_bytes(),
        "signature": (vdir / "manifest.sig").read_bytes(),
        "weights": (vdir / "model.safetensors").read_bytes(),
    }


# --- load generators ---------------------------------------------------------------------------


def quiet_collector() -> None:
    """Keep the load generator's own full collections (over torch's objects) out of the
    latencies it measures; the server does the same at start-up (``freeze_gc``)."""
    gc.collect()
    gc.freeze()


async def sequential(port: int, request: bytes, n: int, warmup: int = 200) -> list[float]:
    quiet_collector()
    conn = await Conn.open(port)
    lat: list[float] = []
    try:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            status, _ = await conn.send(request)
            dt = time.perf_counter() - t0
            if status != 200:
                raise RuntimeError(f"status {status}")
            if i >= warmup:
                lat.append(dt)
    finally:
        conn.close()
    return lat


async def closed_loop(
    port: int, request: bytes, concurrency: int, seconds: float, warmup: float = 0.5
) -> dict[str, Any]:
    """``concurrency`` clients, each sending its next request when the last one returns."""
    quiet_collector()
    lat: list[float] = []
    errors = 0
    conns = [await Conn.open(port) for _ in range(concurrency)]
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds

    async def client(conn: Conn) -> None:
        nonlocal errors
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            status, _ = await conn.send(request)
            t1 = time.perf_counter()
            if measure_from <= t1 <= stop_at:  # completions inside the window
                lat.append(t1 - t0)
                if status != 200:
                    errors += 1

    try:
        await asyncio.gather(*(client(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    return {
        "concurrency": concurrency,
        "requests": len(lat),
        "throughput_rps": len(lat) / seconds,
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "errors": errors,
    }


# --- phases ------------------------------------------------------------------------------------


def train_mnist1d(seconds_cap: float) -> tuple[torch.nn.Module, ModelConfig, DatasetInfo, Any]:
    train, test, info = load_dataset(DataConfig(), 0)
    model_cfg = ModelConfig()  # cnn1d, the quickstart's model
    torch.manual_seed(0)
    module = build_model(model_cfg, info)
    cfg = TrainConfig(local_epochs=1, batch_size=32, optimizer="adam", lr=3e-3)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    t0 = time.perf_counter()
    for epoch in range(30):
        train_local(module, x, y, cfg, seed=epoch, device=torch.device("cpu"))
        if time.perf_counter() - t0 > seconds_cap:
            break
    return module.eval(), model_cfg, info, test


def phase_a(root: Path, n: int) -> dict[str, Any]:
    port_args = ("--max-batch-size", "32", "--max-wait-ms", "2")
    out: dict[str, Any] = {"model": "cnn1d (MNIST-1D, quickstart)", "requests": n}
    with server(root, *port_args) as port:
        x = np.random.default_rng(0).standard_normal((1, 40)).astype(np.float32)
        body = json.dumps({"instances": x.tolist()}).encode()
        for label, req in (
            ("json", encode_request("/v1/models/mnist1d:predict", body, "application/json")),
            ("npy", encode_request("/v1/models/mnist1d:predict", npy(x), "application/x-npy")),
        ):
            lat = asyncio.run(sequential(port, req, n))
            out[label] = {
                "p50_ms": pct(lat, 50),
                "p90_ms": pct(lat, 90),
                "p99_ms": pct(lat, 99),
                "mean_ms": statistics.fmean(lat) * 1000,
            }
        health = encode_request("/healthz", b"", "text/plain").replace(b"POST", b"GET", 1)
        lat = asyncio.run(sequential(port, health, n))
        out["healthz_floor"] = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}
    return out


def phase_b(root: Path, levels: list[int], seconds: float) -> dict[str, Any]:
    x = np.random.default_rng(1).standard_normal((1, 1, 28, 28)).astype(np.float32)
    req = encode_request("/v1/models/cnn_mnist:predict", npy(x), "application/x-npy")
    out: dict[str, Any] = {"model": "cnn_mnist (McMahan CNN, random weights)", "seconds": seconds}
    for label, batch in (("batching_on", "32"), ("batching_off", "1")):
        rows = []
        with server(root, "--max-batch-size", batch, "--max-wait-ms", "2") as port:
            asyncio.run(sequential(port, req, 50))  # warm the model up
            for c in levels:
                rows.append(asyncio.run(closed_loop(port, req, c, seconds)))
        out[label] = rows
    on = {r["concurrency"]: r for r in out["batching_on"]}
    off = {r["concurrency"]: r for r in out["batching_off"]}
    out["speedup"] = {
        str(c): on[c]["throughput_rps"] / max(off[c]["throughput_rps"], 1e-9) for c in levels
    }
    return out


def model_ms_per_sample(module: torch.nn.Module, shape: tuple[int, ...]) -> dict[str, float]:
    """The forward pass alone, one torch thread (what each server worker uses)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        with torch.inference_mode():
            for bs in (1, 32):
                x = torch.randn(bs, *shape)
                for _ in range(5):
                    module(x)
                t0 = time.perf_counter()
                for _ in range(40):
                    module(x)
                out[str(bs)] = (time.perf_counter() - t0) / 40 / bs * 1000
    finally:
        torch.set_num_threads(threads)
    return out


def batching(
    base: Path, key: Ed25519PrivateKey, levels: list[int], seconds: float
) -> dict[str, Any]:
    cnn_cfg = ModelConfig(name="cnn_mnist")
    cnn_info = DatasetInfo((1, 28, 28), 10)
    torch.manual_seed(0)
    cnn = build_model(cnn_cfg, cnn_info).eval()
    reg_b = new_registry(base / "reg-cnn", key)
    publish(reg_b, key, "cnn_mnist", cnn, cnn_cfg, cnn_info, int8=True)
    out = phase_b(reg_b.root, levels, seconds)
    out["parameters"] = count_parameters(cnn)
    out["model_alone_ms_per_sample_by_batch"] = model_ms_per_sample(cnn, (1, 28, 28))
    out["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return out


def phase_c(root: Path, key: Ed25519PrivateKey, cfg: ModelConfig, info: Any) -> dict[str, Any]:
    """10,000 requests from 32 clients while 5 versions are published over HTTP."""
    total, swaps, concurrency = 10_000, 5, 32
    registry = Registry(root)
    first = registry.version_numbers("mnist1d")[-1]
    scratch = new_registry(root.parent / "scratch-c", key)
    parts = []
    for i in range(swaps):
        torch.manual_seed(100 + i)
        fresh = build_model(cfg, info)
        v = publish(
            scratch, key, "mnist1d", fresh, cfg, info, activate=False, version=first + 1 + i
        )
        parts.append(version_parts(scratch, "mnist1d", v))
    x = np.random.default_rng(2).standard_normal((1, 40)).astype(np.float32)
    req = encode_request("/v1/models/mnist1d:predict", npy(x), "application/x-npy")
    published: list[dict[str, Any]] = []
    with server(root, "--max-batch-size", "32", "--max-wait-ms", "2") as port:

        async def main() -> dict[str, Any]:
            sent = 0
            failed = 0
            versions: dict[int, int] = {}
            conns = [await Conn.open(port) for _ in range(concurrency)]

            async def client(conn: Conn) -> None:
                nonlocal sent, failed
                while sent < total:
                    sent += 1
                    try:
                        status, body = await conn.send(req)
                    except (OSError, asyncio.IncompleteReadError):
                        failed += 1
                        continue
                    if status != 200:
                        failed += 1
                    else:
                        v = json.loads(body)["version"]
                        versions[v] = versions.get(v, 0) + 1

            async def publisher() -> None:
                async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}") as http:
                    for i in range(swaps):
                        while sent < (i + 1) * total // (swaps + 1):
                            await asyncio.sleep(0.005)
                        p = parts[i]
                        t0 = time.perf_counter()
                        resp = await http.post(
                            "/v1/models/mnist1d/versions",
                            files={k: (k, v) for k, v in p.items()},
                            headers={"Authorization": f"Bearer {TOKEN}"},
                        )
                        published.append(
                            {
                                "status": resp.status_code,
                                "at_request": sent,
                                "seconds": time.perf_counter() - t0,
                                "version": resp.json().get("version"),
                            }
                        )

            t0 = time.perf_counter()
            await asyncio.gather(*(client(c) for c in conns), publisher())
            wall = time.perf_counter() - t0
            for c in conns:
                c.close()
            return {"sent": sent, "failed": failed, "by_version": versions, "seconds": wall}

        res = asyncio.run(main())
    return {
        "requests": res["sent"],
        "failed": res["failed"],
        "swaps": swaps,
        "first_version": first,
        "publishes": published,
        "answers_by_version": {str(k): v for k, v in sorted(res["by_version"].items())},
        "seconds": res["seconds"],
    }


def phase_d(
    root: Path, name: str, test: Any, n: int, input_shape: tuple[int, ...]
) -> dict[str, Any]:
    """fp32 vs int8 copy of the active version: size, served accuracy, batch-1 latency."""
    registry = Registry(root)
    version = registry.active_version(name)
    vdir = root / name / "versions" / str(version)
    out: dict[str, Any] = {
        "model": name,
        "fp32_bytes": (vdir / "model.safetensors").stat().st_size,
        "int8_bytes": (vdir / "model-int8.safetensors").stat().st_size,
    }
    x1 = np.zeros((1, *input_shape), np.float32)
    req = encode_request(f"/v1/models/{name}:predict", npy(x1), "application/x-npy")
    for variant, flag in (("fp32", ()), ("int8", ("--int8",))):
        with server(root, "--max-batch-size", "32", *flag) as port:
            info = httpx.get(f"http://{HOST}:{port}/v1/models/{name}").json()
            assert info["variant"] == variant, info
            entry: dict[str, Any] = {}
            if test is not None:
                correct = 0
                with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=60) as http:
                    for b in range(0, len(test.y), 1024):
                        resp = http.post(
                            f"/v1/models/{name}:predict",
                            content=npy(test.x[b : b + 1024]),
                            headers=NPY_HEADERS,
                        )
                        pred = np.asarray(resp.json()["predictions"])
                        correct += int((pred == test.y[b : b + 1024]).sum())
                entry["served_accuracy"] = correct / len(test.y)
            lat = asyncio.run(sequential(port, req, n))
            entry.update({"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)})
            out[variant] = entry
    return out


def phase_e(root: Path, key: Ed25519PrivateKey, cfg: ModelConfig, info: Any) -> dict[str, Any]:
    """2 workers; a new version is written straight into the registry (as a training run's
    publisher does, so neither worker is told): seconds until both workers answer with it."""
    registry = Registry(root)
    x = np.zeros((1, 40), np.float32)
    rounds = []
    with server(root, "--workers", "2") as port:
        url = f"http://{HOST}:{port}/v1/models/mnist1d:predict"
        for i in range(3):
            torch.manual_seed(200 + i)
            t0 = time.perf_counter()
            version = publish(registry, key, "mnist1d", build_model(cfg, info), cfg, info)
            written = time.perf_counter()
            switched: dict[str, float] = {}
            old_answers = requests = 0
            while len(switched) < 2 and time.perf_counter() - written < 10:
                # a fresh connection each time, so both workers get requests
                r = httpx.post(url, content=npy(x), headers=NPY_HEADERS, timeout=10)
                requests += 1
                worker = r.headers["x-fedsys-worker"]
                if r.json()["version"] == version:
                    switched.setdefault(worker, time.perf_counter() - written)
                else:
                    old_answers += 1
            rounds.append(
                {
                    "version": version,
                    "publish_seconds": written - t0,
                    "workers_seen_new": len(switched),
                    "seconds_until_each_worker_served_it": sorted(switched.values()),
                    "old_version_answers_meanwhile": old_answers,
                    "requests": requests,
                }
            )
            time.sleep(0.5)
    return {"workers": 2, "poll_interval_s": 0.2, "publishes": rounds}


def oip_requests(x: np.ndarray, name: str) -> dict[str, bytes]:
    """Batch-1 requests for the same rows: fedsys's :predict and the V2 infer (JSON, binary)."""
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
    v2 = json.dumps({"inputs": [{**tensor, "data": x.reshape(-1).tolist()}],
                     "outputs": [{"name": "predictions"}]}).encode()  # fmt: skip
    head = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "predictions", "parameters": {"binary_data": True}}],
        }
    ).encode()
    binary = encode_request(f"/v2/models/{name}/infer", head + x.tobytes(), "application/json")
    binary = binary.replace(
        b"\r\n\r\n", f"\r\nInference-Header-Content-Length: {len(head)}\r\n\r\n".encode(), 1
    )
    return {
        "predict_json": encode_request(
            f"/v1/models/{name}:predict",
            json.dumps({"instances": x.tolist()}).encode(),
            "application/json",
        ),
        "v2_infer_json": encode_request(f"/v2/models/{name}/infer", v2, "application/json"),
        "v2_infer_binary": binary,
    }


def phase_f(root: Path, name: str, n: int, blocks: int = 10) -> dict[str, Any]:
    """Sequential batch-1 latency of each protocol, in interleaved blocks (drift cancels)."""
    x = np.random.default_rng(3).standard_normal((1, 40)).astype(np.float32)
    requests = oip_requests(x, name)
    lat: dict[str, list[float]] = {k: [] for k in requests}
    with server(root, "--max-batch-size", "32", "--max-wait-ms", "2") as port:
        for label, req in requests.items():  # warm every path up
            asyncio.run(sequential(port, req, 10, warmup=100))
            del label
        for _ in range(blocks):
            for label, req in requests.items():
                lat[label] += asyncio.run(sequential(port, req, n // blocks, warmup=20))
    out: dict[str, Any] = {"model": name, "requests_each": n}
    for label, values in lat.items():
        out[label] = {"p50_ms": pct(values, 50), "p99_ms": pct(values, 99)}
    base = out["predict_json"]["p50_ms"]
    out["p50_ratio_vs_predict"] = {
        k: out[k]["p50_ms"] / base for k in ("v2_infer_json", "v2_infer_binary")
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Shorter phases (a smoke run).")
    parser.add_argument("--out", type=Path, default=OUT, help="Where the JSON report goes.")
    parser.add_argument(
        "--only-batching",
        action="store_true",
        help="Re-measure phase (b) only and replace it in an existing report.",
    )
    parser.add_argument(
        "--only-oip",
        action="store_true",
        help="Measure phase (f) only (a random-weight MNIST-1D model) into an existing report.",
    )
    args = parser.parse_args()
    # A terminated benchmark still stops its servers and removes its registries.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    n_seq = 300 if args.quick else 3000
    seconds = 1.0 if args.quick else 4.0
    levels = [1, 8, 32, 128]
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "note": "loopback; load generator and server share the machine's two cores",
        }
    }
    t_start = time.perf_counter()
    key = Ed25519PrivateKey.generate()
    if args.only_oip:
        results = json.loads(args.out.read_text()) if args.out.exists() else results
        with tempfile.TemporaryDirectory(prefix="fedsys-bench-serving-") as tmp:
            reg = new_registry(Path(tmp) / "reg-oip", key)
            _, info = load_dataset(DataConfig(), 0)[1:]
            torch.manual_seed(0)
            publish(reg, key, "mnist1d", build_model(ModelConfig(), info), ModelConfig(), info)
            results["f_oip_vs_predict"] = phase_f(reg.root, "mnist1d", 300 if args.quick else 3000)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print("f", json.dumps(results["f_oip_vs_predict"]), flush=True)
        return
    if args.only_batching:
        results = json.loads(args.out.read_text())
        with tempfile.TemporaryDirectory(prefix="fedsys-bench-serving-") as tmp:
            results["b_cnn_mnist_batching"] = batching(Path(tmp), key, levels, seconds)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print("b", json.dumps(results["b_cnn_mnist_batching"]), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="fedsys-bench-serving-") as tmp:
        base = Path(tmp)
        module, cfg, info, test = train_mnist1d(seconds_cap=20 if args.quick else 60)
        acc = evaluate(
            module,
            torch.from_numpy(test.x),
            torch.from_numpy(test.y),
            batch_size=1024,
            device=torch.device("cpu"),
        ).accuracy
        reg_a = new_registry(base / "reg-mnist1d", key)
        publish(reg_a, key, "mnist1d", module, cfg, info, int8=True, accuracy=acc)
        results["a_mnist1d_batch1"] = phase_a(reg_a.root, n_seq)
        results["a_mnist1d_batch1"]["parameters"] = count_parameters(module)
        print("a", json.dumps(results["a_mnist1d_batch1"]), flush=True)

        results["b_cnn_mnist_batching"] = batching(base, key, levels, seconds)
        reg_b = Registry(base / "reg-cnn")
        print("b", json.dumps(results["b_cnn_mnist_batching"]), flush=True)

        results["c_hot_swaps"] = phase_c(reg_a.root, key, cfg, info)
        print("c", json.dumps(results["c_hot_swaps"]), flush=True)

        # (d) on fresh registries: phase (c) moved mnist1d's active version.
        reg_d = new_registry(base / "reg-d", key)
        publish(reg_d, key, "mnist1d", module, cfg, info, int8=True, accuracy=acc)
        results["d_int8_vs_fp32"] = {
            "mnist1d": phase_d(reg_d.root, "mnist1d", test, n_seq, (40,)),
            "cnn_mnist": phase_d(reg_b.root, "cnn_mnist", None, n_seq, (1, 28, 28)),
        }
        results["d_int8_vs_fp32"]["mnist1d"]["central_fp32_accuracy"] = acc
        print("d", json.dumps(results["d_int8_vs_fp32"]), flush=True)

        results["e_two_workers_swap"] = phase_e(reg_a.root, key, cfg, info)
        print("e", json.dumps(results["e_two_workers_swap"]), flush=True)

        results["f_oip_vs_predict"] = phase_f(reg_d.root, "mnist1d", n_seq)
        print("f", json.dumps(results["f_oip_vs_predict"]), flush=True)
    results["wall_seconds"] = time.perf_counter() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
