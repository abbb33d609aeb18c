"""Text units to token chunks: the public share, one client per unit (or IID), held-out text.

Deterministic for a seed: the public units are a seeded draw, clients are the largest remaining
units, and each client's chunks are shuffled with a seed before the held-out share is cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedsys.errors import DataError
from fedsys.lm_config import TextConfig
from fedsys.tasks.lm.corpus import Corpus
from fedsys.tasks.lm.tokenizer import TextTokenizer

Chunks = npt.NDArray[np.int64]  # (examples, seq_len) token ids


@dataclass(frozen=True, eq=False)
class TokenSplit:
    """One holder's text as fixed-length token chunks: what it trains on and what it holds out."""

    name: str
    train: Chunks
    test: Chunks

    @property
    def num_examples(self) -> int:
        return int(self.train.shape[0])


@dataclass(frozen=True, eq=False)
class TextData:
    """The run's text: the server's public split and one split per client."""

    public: TokenSplit
    clients: tuple[TokenSplit, ...]
    corpus_sha256: str
    public_units: tuple[str, ...]
    client_units: tuple[str, ...]


@dataclass(frozen=True)
class UnitChoice:
    public: tuple[str, ...]
    clients: tuple[str, ...]


def choose_units(corpus: Corpus, cfg: TextConfig, num_clients: int, seed: int) -> UnitChoice:
    """A seeded ``public_fraction`` of the units for the server; the largest others as clients."""
    names = sorted(corpus.units)
    order = np.random.default_rng(seed).permutation(len(names))
    held = round(cfg.public_fraction * len(names))
    if cfg.public_fraction > 0:
        held = max(1, held)
    public = tuple(sorted(names[i] for i in order[:held]))
    rest = [names[i] for i in order[held:]]
    rest.sort(key=lambda n: (-corpus.units[n].size, n))
    if len(rest) < num_clients:
        raise DataError(
            f"data.num_partitions={num_clients} clients, but {corpus.description} has only "
            f"{len(rest)} units left after holding back {len(public)} as public data "
            f"(lm.text.public_fraction={cfg.public_fraction})"
        )
    return UnitChoice(public=public, clients=tuple(rest[:num_clients]))


def token_stream(texts: Sequence[str], tokenizer: TextTokenizer) -> npt.NDArray[np.int64]:
    """Documents' ids back to back, each followed by end-of-text."""
    eos = np.asarray([tokenizer.eos_id], dtype=np.int64)
    parts: list[npt.NDArray[np.int64]] = []
    for text in texts:
        parts += [tokenizer.encode(text), eos]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def to_chunks(stream: npt.NDArray[np.int64], seq_len: int) -> Chunks:
    """Consecutive, non-overlapping ``seq_len`` windows; the remainder is dropped."""
    n = len(stream) // seq_len
    return np.ascontiguousarray(stream[: n * seq_len].reshape(n, seq_len))


def hold_out(
    name: str, chunks: Chunks, test_fraction: float, seed: int, cap: int | None
) -> TokenSplit:
    """Shuffle (seeded), keep at most ``cap`` chunks, and hold out ``test_fraction`` of them."""
    if len(chunks) < 2:
        raise DataError(
            f"text unit {name!r} gives {len(chunks)} chunk(s); at least 2 are needed (one to "
            "train on, one held out): lower lm.text.seq_len or give it more text"
        )
    order = np.random.default_rng(seed).permutation(len(chunks))
    if cap is not None:
        order = order[:cap]
    n_test = min(len(order) - 1, max(1, round(test_fraction * len(order))))
    return TokenSplit(name, train=chunks[order[n_test:]], test=chunks[order[:n_test]])


def _unit_seed(seed: int, name: str) -> int:
    return int.from_bytes(name.encode()[:16].ljust(16, b"\0"), "little") ^ seed


def build_text_data(
    corpus: Corpus,
    choice: UnitChoice,
    tokenizer: TextTokenizer,
    cfg: TextConfig,
    seed: int,
) -> TextData:
    """Tokenize the chosen units into the public split and the clients' splits."""
    public_texts = [t for name in choice.public for t in corpus.units[name].read()]
    public = hold_out(
        "public",
        to_chunks(token_stream(public_texts, tokenizer), cfg.seq_len),
        cfg.test_fraction,
        seed,
        cfg.max_public_chunks,
    )
    per_unit = [
        to_chunks(token_stream(corpus.units[name].read(), tokenizer), cfg.seq_len)
        for name in choice.clients
    ]
    if cfg.partitioner == "natural":
        clients = tuple(
            hold_out(name, chunks, cfg.test_fraction, _unit_seed(seed, name), cfg.max_client_chunks)
            for name, chunks in zip(choice.clients, per_unit, strict=True)
        )
    else:
        pooled = np.concatenate(per_unit)
        order = np.random.default_rng(seed + 1).permutation(len(pooled))
        k = len(choice.clients)
        clients = tuple(
            hold_out(
                f"iid-{i}", pooled[order[i::k]], cfg.test_fraction, seed + i, cfg.max_client_chunks
            )
            for i in range(k)
        )
    return TextData(
        public=public,
        clients=clients,
        corpus_sha256=corpus.sha256,
        public_units=choice.public,
        client_units=choice.clients,
    )
