"""Text generation on loopback: continuous batching against one request at a time.

    python simulations/bench_generation.py [--quick] [--sizes lm_tiny,lm_small]

For each model size, a real ``fedsys serve`` process serves a Llama-style model (random
weights from a ``transformers`` config, byte-level tokenizer) published to a signed registry,
and this process streams ``/v1/completions`` requests to it over loopback at 1, 4, 16 and 64
concurrent clients (``max_tokens`` tokens each, ``ignore_eos`` so every request has the same
length). The reference runs the same requests one at a time through ``transformers``'
``generate`` in this process (same weights, greedy, one torch thread like the server). Then
5 LoRA adapter versions are published while streaming requests run on the adapter model:
every stream must finish on the version it started with. Every phase is bounded in time.
Writes ``simulations/results/bench_generation.json``.

The load generator is a small asyncio HTTP/1.1 client reading the chunked server-sent events
(hand-written, as in ``bench_serving.py``: it shares the machine's cores with the server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedsys.crypto import public_to_raw
from fedsys.registry import Lineage, Registry
from fedsys.registry.lm_base import tensors_sha256
from fedsys.registry.version_manifest import LanguageModelVersion
from fedsys.serving.runner import free_port, serve_process
from fedsys.tasks.lm.models import SIZES  # the language-model task's named sizes

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "simulations" / "results" / "bench_generation.json"
HOST = "127.0.0.1"
VOCAB = 257  # bytes + end-of-text
PROMPT_SOURCE = Path(json.__file__).read_text()  # any fixed text of the interpreter's own


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000.0 if values else float("nan")


# --- the model, written as a Hugging Face directory and published --------------------------------


def write_model(directory: Path, size: str, context: int) -> torch.nn.Module:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    config = LlamaConfig(
        vocab_size=VOCAB,
        max_position_embeddings=context,
        bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
        pad_token_id=VOCAB - 1,
        tie_word_embeddings=False,
        **SIZES[size],
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(str(directory))
    table = bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    vocab["<|endoftext|>"] = 256
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(["<|endoftext|>"])
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>").save_pretrained(
        str(directory)
    )
    return model


def new_registry(root: Path) -> tuple[Registry, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    root.mkdir(parents=True, exist_ok=True)
    (root / "publisher.pub").write_bytes(public_to_raw(key.public_key()))
    return Registry(root), key


def publish(
    registry: Registry,
    key: Ed25519PrivateKey,
    name: str,
    base: str,
    sha: str,
    tensors: dict[str, np.ndarray],
    adapter_config: dict[str, Any] | None = None,
) -> int:
    spec = LanguageModelVersion(
        kind="adapter" if adapter_config else "merged",
        base=base,
        base_sha256=sha,
        adapter_config=adapter_config,
    )
    manifest = registry.publish(
        name,
        tensors,
        model={"name": "llama"},
        input_shape=[1024],
        num_classes=VOCAB,
        round=0,
        metrics={},
        lineage=Lineage(clients=0, strategy="bench"),
        signing_key=key,
        language_model=spec,
    )
    return manifest.version


def lora(model: torch.nn.Module, seed: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    torch.manual_seed(seed)
    wrapped = get_peft_model(model, config)
    tensors = {k: v.detach().numpy().copy() for k, v in get_peft_model_state_dict(wrapped).items()}
    wrapped.unload()  # the base back as it was, for the next adapter
    as_dict = json.loads(json.dumps(config.to_dict(), default=sorted))
    return as_dict, tensors


@contextlib.contextmanager
def server(registry: Path, *args: str) -> Iterator[int]:
    port = free_port(HOST)
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    with serve_process(
        ["--registry", str(registry), "--torch-threads", "1", *args],
        host=HOST,
        port=port,
        ready_path="/readyz",
        env=env,
    ):
        yield port


# --- a streaming client -------------------------------------------------------------------------


async def stream(port: int, body: dict[str, Any]) -> dict[str, Any]:
    """One streamed completion: arrival times of its token chunks, the versions named by its
    chunks, and whether it ended with a finish reason and ``[DONE]``."""
    payload = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection(HOST, port)
    start = time.perf_counter()
    writer.write(
        b"POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    times: list[float] = []
    models: set[str] = set()
    finished = done = False
    buffer = b""
    try:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                break
            buffer += (await reader.readexactly(size + 2))[:-2]
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: "):
                    continue
                data = event[6:]
                if data == b"[DONE]":
                    done = True
                    continue
                chunk = json.loads(data)
                models.add(chunk.get("model", "?"))
                choice = (chunk.get("choices") or [{}])[0]
                if choice.get("finish_reason") is None and "text" in choice:
                    times.append(time.perf_counter())
                elif choice.get("finish_reason"):
                    finished = True
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return {
        "status": status,
        "start": start,
        "end": time.perf_counter(),
        "times": times,
        "models": models,
        "ok": status == 200 and finished and done,
    }


def request_body(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
    }


async def drive(
    port: int, bodies: list[dict[str, Any]], concurrency: int, results: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Stream ``bodies`` with ``concurrency`` clients; ``results`` fills as streams end."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def client() -> None:
        while not queue.empty():
            results.append(await stream(port, queue.get_nowait()))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return results


def summarize(results: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    tokens = sum(len(r["times"]) for r in results)
    ttft = [r["times"][0] - r["start"] for r in results if r["times"]]
    gaps = [b - a for r in results for a, b in zip(r["times"], r["times"][1:], strict=False)]
    latency = [r["end"] - r["start"] for r in results]
    return {
        "requests": len(results),
        "failed": sum(not r["ok"] for r in results),
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "ttft_p50_ms": round(pct(ttft, 50), 2),
        "inter_token_p50_ms": round(pct(gaps, 50), 2),
        "inter_token_p99_ms": round(pct(gaps, 99), 2),
        "latency_p50_ms": round(pct(latency, 50), 1),
        "latency_p95_ms": round(pct(latency, 95), 1),
    }


def prompts(n: int, length: int) -> list[str]:
    step = max(1, (len(PROMPT_SOURCE) - length) // max(n, 1))
    return [PROMPT_SOURCE[i * step : i * step + length] for i in range(n)]


# --- phases -------------------------------------------------------------------------------------


def reference_generate(
    model: torch.nn.Module, tokenizer: Any, texts: list[str], max_tokens: int
) -> dict[str, Any]:
    """One request at a time through transformers' generate (what a plain server does)."""
    torch.set_num_threads(1)
    latencies: list[float] = []
    start = time.perf_counter()
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(  # type: ignore[operator]
                ids,
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=VOCAB - 1,
            )
        latencies.append(time.perf_counter() - t0)
        assert out.shape[1] - ids.shape[1] == max_tokens
    wall = time.perf_counter() - start
    return {
        "requests": len(texts),
        "tokens": len(texts) * max_tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(len(texts) * max_tokens / wall, 1),
        "latency_p50_ms": round(pct(latencies, 50), 1),
    }


def throughput(
    root: Path, size: str, levels: list[int], max_tokens: int, prompt_chars: int, budget_s: float
) -> dict[str, Any]:
    from transformers import AutoTokenizer

    registry, key = new_registry(root / size)
    base = root / size / "bases" / size
    model = write_model(base, size, context=1024)
    sha = tensors_sha256(model.state_dict())
    tensors = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    publish(registry, key, size, f"bases/{size}", sha, tensors)
    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    out: dict[str, Any] = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "max_tokens": max_tokens,
        "prompt_chars": prompt_chars,
    }
    n_ref = 8
    out["reference_generate_one_at_a_time"] = reference_generate(
        model, tokenizer, prompts(n_ref, prompt_chars), max_tokens
    )
    print(size, "reference", json.dumps(out["reference_generate_one_at_a_time"]), flush=True)
    ref_tps = out["reference_generate_one_at_a_time"]["tokens_per_s"]
    with server(registry.root, "--decode-batch", "64") as port:
        asyncio.run(drive(port, [request_body(size, "warm", 4)] * 2, 2, []))
        levels_out: dict[str, Any] = {}
        for level in levels:
            n = max(2 * level, 8)
            bodies = [request_body(size, p, max_tokens) for p in prompts(n, prompt_chars)]
            t0 = time.perf_counter()
            results = asyncio.run(asyncio.wait_for(drive(port, bodies, level, []), budget_s))
            summary = summarize(results, time.perf_counter() - t0)
            summary["x_reference_tokens_per_s"] = round(summary["tokens_per_s"] / ref_tps, 2)
            levels_out[str(level)] = summary
            print(size, level, json.dumps(summary), flush=True)
        out["continuous_batching"] = levels_out
    return out


def swaps(root: Path, requests: int, publishes: int, concurrency: int, budget_s: float) -> Any:
    """``requests`` streams on an adapter model while ``publishes`` new adapter versions are
    published: failed streams and streams whose chunks name more than one version."""
    registry, key = new_registry(root / "swap")
    base = root / "swap" / "bases" / "lm_tiny"
    model = write_model(base, "lm_tiny", context=1024)
    sha = tensors_sha256(model.state_dict())
    config, tensors = lora(model, seed=0)
    publish(registry, key, "chat", "bases/lm_tiny", sha, tensors, config)
    adapters = [lora(model, seed=s) for s in range(1, publishes + 1)]
    bodies = [request_body("chat", p, 8) for p in prompts(requests, 48)]

    async def run(port: int) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        traffic = asyncio.create_task(drive(port, bodies, concurrency, results))
        every = requests // (publishes + 1)
        for i, (cfg, ten) in enumerate(adapters):
            while not traffic.done() and len(results) < every * (i + 1):
                await asyncio.sleep(0.02)
            await asyncio.to_thread(publish, registry, key, "chat", "bases/lm_tiny", sha, ten, cfg)
        return await traffic

    with server(registry.root, "--decode-batch", "64") as port:
        t0 = time.perf_counter()
        results = asyncio.run(asyncio.wait_for(run(port), budget_s))
        wall = time.perf_counter() - t0
    versions = [sorted(r["models"]) for r in results]
    return {
        "requests": len(results),
        "publishes": publishes,
        "concurrency": concurrency,
        "failed": sum(not r["ok"] for r in results),
        "mixed_version_streams": sum(len(v) > 1 for v in versions),
        "versions_seen": sorted({m for v in versions for m in v}),
        "wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Fewer requests (a smoke run).")
    parser.add_argument("--sizes", default="lm_tiny,lm_small")
    parser.add_argument("--levels", default="1,4,16,64")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--swap-requests", type=int, default=2000)
    parser.add_argument("--skip-swaps", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    swap_requests = 200 if args.quick else args.swap_requests
    t_start = time.perf_counter()
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "note": "server and load generator share this machine's cores; loopback HTTP",
    }
    with tempfile.TemporaryDirectory(prefix="fedsys-bench-gen-") as tmp:
        root = Path(tmp)
        for size in args.sizes.split(","):
            results[size] = throughput(root, size, levels, args.max_tokens, 64, budget_s=300)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
        if not args.skip_swaps:
            results["adapter_swaps"] = swaps(root, swap_requests, 5, 16, budget_s=400)
            print("swaps", json.dumps(results["adapter_swaps"]), flush=True)
    results["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
