"""Micro-benchmark of the update codec and the envelopes, on a synthetic model.

The model has 1.6M parameters in several tensors, one 10M-parameter tensor and BatchNorm's
int64 counter. For each scheme it measures bytes per update and the ratio to raw float32,
encode / decode / validate seconds and StreamingSum's add rate; then AEAD and envelope
throughput on 1 MiB frames. Runs single-threaded so numbers are per core.

    python simulations/bench_codec_micro.py [--reps 3] [--out simulations/results/...json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import cryptography
import torch
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from fedsys.codec import (
    Quantize,
    Residual,
    Stage,
    StreamingSum,
    TopK,
    UpdatePolicy,
    check_payload,
    decode_update,
    encode_update,
    template_from,
)
from fedsys.crypto import (
    AggregatorKeys,
    ClientKeys,
    RoundBinding,
    generate_exchange_key,
    generate_signing_key,
    open_envelope,
    seal,
)

T = TypeVar("T")
MIB = 1 << 20
SCHEMES: dict[str, list[Stage]] = {
    "none": [],
    "fp16": [Quantize(bits=16)],
    "int8": [Quantize(bits=8)],
    "int4": [Quantize(bits=4)],
    "topk10%+int8": [TopK(0.1), Quantize(bits=8)],
}
TARGET_RATIO = {"int8": 0.26, "int4": 0.14, "topk10%+int8": 0.05}


def synthetic_update(seed: int = 0) -> dict[str, torch.Tensor]:
    """Float32 deltas (std 1e-3): 1.6M parameters over six tensors, one 10M tensor, a counter."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {
        "conv1.weight": (64, 3, 7, 7),
        "conv1.bias": (64,),
        "block.weight": (256, 256, 3, 3),
        "block.bias": (256,),
        "fc.weight": (1000, 1000),
        "fc.bias": (1000,),
        "embedding.weight": (10_000, 1000),
    }
    update = {n: torch.randn(s, generator=gen) * 1e-3 for n, s in shapes.items()}
    update["bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)
    return update


def best_of(fn: Callable[[], T], reps: int) -> tuple[float, T]:
    """Fastest of ``reps`` runs (the machine is shared; the minimum is the least disturbed)."""
    times = []
    for _ in range(max(reps, 1)):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def bench_schemes(update: dict[str, torch.Tensor], reps: int) -> list[dict[str, Any]]:
    template = template_from(update)
    params = sum(t.numel() for t in update.values() if t.is_floating_point())
    fp32_bytes = sum(t.numel() * t.element_size() for t in update.values())
    policy = UpdatePolicy(require_envelope=False)
    rows = []
    for name, pipeline in SCHEMES.items():
        residual = Residual() if any(isinstance(s, TopK) for s in pipeline) else None
        enc_s, encoded = best_of(partial(encode_update, update, pipeline, residual=residual), reps)
        payload = encoded.payload
        dec_s, _ = best_of(partial(decode_update, payload), reps)
        check_s, checked = best_of(partial(check_payload, payload, template, policy), reps)
        total = StreamingSum(template)
        add_s, _ = best_of(partial(total.add, checked.wire, 1.0), reps)
        rows.append(
            {
                "scheme": name,
                "error_feedback": residual is not None,
                "params": params,
                "bytes": len(payload),
                "ratio_vs_fp32": round(len(payload) / fp32_bytes, 5),
                "target_ratio": TARGET_RATIO.get(name),
                "meets_target": len(payload) / fp32_bytes <= TARGET_RATIO[name]
                if name in TARGET_RATIO
                else None,
                "encode_s": round(enc_s, 4),
                "decode_s": round(dec_s, 4),
                "validate_s": round(check_s, 4),
                "stream_add_s": round(add_s, 4),
                "stream_add_mparams_per_s": round(params / add_s / 1e6, 1),
            }
        )
        print(f"{name:>14}: {rows[-1]}")
    return rows


def _gbps(nbytes: int, seconds: float) -> float:
    return round(nbytes / seconds / 1e9, 3)


def bench_crypto(reps: int, payload_mib: int = 64) -> dict[str, Any]:
    """AEAD alone on 1 MiB frames, SHA-256, and whole seal/open (AES-256-GCM)."""
    payload = os.urandom(payload_mib * MIB)
    view = memoryview(payload)
    frames = payload_mib
    out: dict[str, Any] = {"frame_bytes": MIB, "payload_bytes": len(payload)}
    for cipher, aead in (
        ("aes-256-gcm", AESGCM(AESGCM.generate_key(256))),
        ("chacha20-poly1305", ChaCha20Poly1305(ChaCha20Poly1305.generate_key())),
    ):
        sink = bytearray(len(payload) + 16 * frames)
        sview = memoryview(sink)

        def encrypt_into(a: Any = aead, s: memoryview = sview) -> None:
            for i in range(frames):
                a.encrypt_into(
                    i.to_bytes(12, "big"),
                    view[i * MIB : (i + 1) * MIB],
                    b"aad",
                    s[i * (MIB + 16) : (i + 1) * (MIB + 16)],
                )

        def encrypt_alloc(a: Any = aead) -> list[bytes]:
            return [
                a.encrypt(i.to_bytes(12, "big"), view[i * MIB : (i + 1) * MIB], b"aad")
                for i in range(frames)
            ]

        out[f"{cipher}_encrypt_into_gbps"] = _gbps(len(payload), best_of(encrypt_into, reps)[0])
        out[f"{cipher}_encrypt_new_bytes_gbps"] = _gbps(
            len(payload), best_of(encrypt_alloc, reps)[0]
        )
    out["sha256_gbps"] = _gbps(
        len(payload), best_of(lambda: hashlib.sha256(payload).digest(), reps)[0]
    )
    server, signer = generate_exchange_key(), generate_signing_key()
    client = ClientKeys("client-0", signer, server.public_key())
    keys = AggregatorKeys(server, {"client-0": signer.public_key()})
    binding = RoundBinding(1, 1, 1)
    seal_s, envelope = best_of(lambda: seal(payload, client, binding), reps)
    open_s, _ = best_of(
        lambda: open_envelope(envelope, keys, binding, max_payload_bytes=len(payload)), reps
    )
    out["seal_gbps"] = _gbps(len(payload), seal_s)
    out["open_gbps"] = _gbps(len(payload), open_s)
    out["target_aead_gbps"] = 3.0
    out["meets_target"] = out["aes-256-gcm_encrypt_into_gbps"] >= 3.0
    print(f"crypto: {out}")
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "bench_codec_micro.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    update = synthetic_update()
    report = {
        "machine": {
            "cpu": cpu_name(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cryptography": cryptography.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg(),
        },
        "model": {n: list(t.shape) for n, t in update.items()},
        "schemes": bench_schemes(update, args.reps),
        "crypto": bench_crypto(args.reps),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
