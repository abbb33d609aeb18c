"""``fedsys pretrain``: train the base centrally on the public split, write a HF checkpoint.

The federated phase then starts from a model that already knows the public packages and adapts
it to the clients' private ones. The output directory is an ordinary Hugging Face checkpoint
(``config.json``, ``model.safetensors``, ``tokenizer.json``) that ``lm.base`` can name, plus
``pretrain.json`` with what it was trained on and how well it does on held-out public text.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fedsys.config import ExperimentConfig
from fedsys.errors import ConfigError
from fedsys.tasks.lm.models import build_named, weights_sha256
from fedsys.tasks.lm.text import load_text
from fedsys.tasks.lm.train import evaluate_lm, next_token_loss
from fedsys.training import derive_seed, select_device

REPORT_FILE = "pretrain.json"


@dataclass(frozen=True)
class PretrainReport:
    size: str
    parameters: int
    steps: int
    seconds: float
    train_loss: float
    public_loss: float
    public_perplexity: float
    public_accuracy: float
    base_sha256: str
    corpus_sha256: str
    tokenizer: str
    vocab_size: int
    public_units: list[str]


def pretrain(cfg: ExperimentConfig, out_dir: Path) -> PretrainReport:
    """Train ``lm.size`` from a seeded initialisation on the public split; save to ``out_dir``."""
    if cfg.task != "language_model":
        raise ConfigError("fedsys pretrain needs a config with task: language_model")
    lm, pcfg = cfg.lm, cfg.lm.pretrain
    seed = cfg.runtime.seed
    # The base is what is being made here: read the text as if no base existed yet.
    text_cfg = lm.model_copy(update={"base": None})
    if lm.tokenizer.kind == "checkpoint":
        text_cfg = lm
    tokenizer, data = load_text(text_cfg, cfg.data.num_partitions, seed)
    torch.set_num_threads(max(1, cfg.runtime.torch_threads))
    device = select_device(cfg.train.device)
    model = build_named(lm.size, tokenizer.vocab_size, lm.text.seq_len, seed).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=pcfg.lr, weight_decay=0.0)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to a tenth
        if step < pcfg.warmup_steps:
            return (step + 1) / pcfg.warmup_steps
        progress = (step - pcfg.warmup_steps) / max(1, pcfg.steps - pcfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    train = torch.from_numpy(data.public.train)
    generator = torch.Generator().manual_seed(derive_seed(seed, 11))
    start = time.perf_counter()
    model.train()
    recent: list[float] = []
    for _ in range(pcfg.steps):
        idx = torch.randint(len(train), (min(pcfg.batch_size, len(train)),), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss = next_token_loss(model, train[idx].to(device))
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        recent = [*recent[-19:], float(loss.detach())]
    seconds = time.perf_counter() - start
    model.eval()
    res = evaluate_lm(model, data.public.test, batch_size=32, device=device)
    model.to("cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))  # type: ignore[operator]
    tokenizer.save(out_dir)
    report = PretrainReport(
        size=lm.size,
        parameters=sum(p.numel() for p in model.parameters()),
        steps=pcfg.steps,
        seconds=seconds,
        train_loss=sum(recent) / max(len(recent), 1),
        public_loss=res.loss,
        public_perplexity=res.perplexity,
        public_accuracy=res.accuracy,
        base_sha256=weights_sha256(model),
        corpus_sha256=data.corpus_sha256,
        tokenizer=lm.tokenizer.kind,
        vocab_size=tokenizer.vocab_size,
        public_units=list(data.public_units),
    )
    (out_dir / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report
