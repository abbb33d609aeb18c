"""The run's text, start to finish: source -> units -> tokenizer -> token chunks (memoised).

Every process that needs the text (the server, each simulation worker, ``fedsys pretrain``,
the benchmarks) calls :func:`load_text` and gets the same result for the same settings; a
worker process builds it once for all the virtual clients it serves.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np

from fedsys.errors import ConfigError, DataError
from fedsys.lm_config import LMConfig, TextConfig
from fedsys.tasks.lm.corpus import Corpus, directory_corpus, jsonl_corpus, stdlib_corpus
from fedsys.tasks.lm.split import (
    Chunks,
    TextData,
    TokenSplit,
    UnitChoice,
    build_text_data,
    choose_units,
    hold_out,
    to_chunks,
    token_stream,
)
from fedsys.tasks.lm.tokenizer import (
    TOKENIZER_FILE,
    ByteTokenizer,
    TextTokenizer,
    load_checkpoint_tokenizer,
    train_bpe,
)

_LOCK = threading.RLock()
BPE_TRAINING_CHARS = 4_000_000  # of public text; enough for a few thousand merges


def open_corpus(cfg: TextConfig) -> Corpus:
    if cfg.source == "stdlib":
        return stdlib_corpus()
    if cfg.path is None:  # the config validator already refuses this
        raise ConfigError(f"lm.text.path is required for lm.text.source={cfg.source!r}")
    path = cfg.path.expanduser()
    return directory_corpus(path) if cfg.source == "directory" else jsonl_corpus(path)


def resolve_tokenizer(lm: LMConfig, corpus: Corpus, choice: UnitChoice) -> TextTokenizer:
    """Byte-level; or the base checkpoint's tokenizer; or BPE trained on the public units."""
    kind = lm.tokenizer.kind
    if kind == "byte":
        return ByteTokenizer()
    if lm.base is not None and (kind == "checkpoint" or (lm.base / TOKENIZER_FILE).is_file()):
        return load_checkpoint_tokenizer(lm.base.expanduser())
    texts: list[str] = []
    budget = BPE_TRAINING_CHARS
    for name in choice.public:
        for text in corpus.units[name].read():
            texts.append(text[:budget])
            budget -= len(texts[-1])
        if budget <= 0:
            break
    if not texts:
        raise DataError("lm.tokenizer.kind='bpe' needs public text (lm.text.public_fraction > 0)")
    return train_bpe(texts, lm.tokenizer.vocab_size)


@functools.lru_cache(maxsize=4)
def _load(lm_json: str, num_clients: int, seed: int) -> tuple[TextTokenizer, TextData]:
    lm = LMConfig.model_validate_json(lm_json)
    corpus = open_corpus(lm.text)
    choice = choose_units(corpus, lm.text, num_clients, seed)
    tokenizer = resolve_tokenizer(lm, corpus, choice)
    return tokenizer, build_text_data(corpus, choice, tokenizer, lm.text, seed)


def load_text(lm: LMConfig, num_clients: int, seed: int) -> tuple[TextTokenizer, TextData]:
    """The tokenizer and the tokenized text for these settings, once per process."""
    # Only the settings the text depends on are part of the key.
    key = lm.model_copy(update={"lora": type(lm.lora)(), "pretrain": type(lm.pretrain)()})
    with _LOCK:
        return _load(key.model_dump_json(), num_clients, seed)


def central_sample(data: TextData, max_chunks: int, seed: int) -> Chunks:
    """The clients' held-out chunks pooled, at most ``max_chunks`` of them (seeded draw)."""
    pooled = np.concatenate([c.test for c in data.clients])
    if len(pooled) <= max_chunks:
        return pooled
    order = np.sort(np.random.default_rng(seed).choice(len(pooled), max_chunks, replace=False))
    return np.ascontiguousarray(pooled[order])


def node_text(path: Path, tokenizer: TextTokenizer, cfg: TextConfig, seed: int) -> TokenSplit:
    """A deployed node's own text: a file, or every file under a directory."""
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file())
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"data-path {str(path)!r} is neither a file nor a directory")
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    chunks = to_chunks(token_stream(texts, tokenizer), cfg.seq_len)
    return hold_out(path.name, chunks, cfg.test_fraction, seed, cfg.max_client_chunks)


def clear_memo() -> None:
    with _LOCK:
        _load.cache_clear()
