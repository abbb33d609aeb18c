"""Tokenizers for language models: byte-level, BPE trained on the public text, a checkpoint's.

Every kind is saved as a Hugging Face ``tokenizer.json`` beside the base weights, so a
checkpoint written by ``fedsys pretrain`` loads with ``AutoTokenizer`` as well. The byte-level
tokenizer encodes with numpy (a byte's id is its value): the same ids as its ``tokenizer.json``,
about a thousand times faster than running a merge-free BPE over megabytes of text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fedsys.errors import DataError

END_OF_TEXT = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"
TokenIds = npt.NDArray[np.int64]


class TextTokenizer(Protocol):
    """What the task needs of a tokenizer: ids for text, the end-of-text id, and a file."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    def encode(self, text: str) -> TokenIds: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def save(self, directory: Path) -> None: ...


def _byte_level_backend() -> object:
    """The byte tokenizer as a ``tokenizers.Tokenizer`` (merge-free byte-level BPE)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    table = bytes_to_unicode()  # type: ignore[no-untyped-call]
    vocab = {table[b]: b for b in range(256)}
    vocab[END_OF_TEXT] = 256
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([END_OF_TEXT])
    return backend


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, and 256 for end-of-text: nothing to train or download."""

    @property
    def vocab_size(self) -> int:
        return 257

    @property
    def eos_id(self) -> int:
        return 256

    def encode(self, text: str) -> TokenIds:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def save(self, directory: Path) -> None:
        _save_backend(_byte_level_backend(), directory)


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` (BPE trained here, or a checkpoint's fast tokenizer)."""

    def __init__(self, backend: object, eos: str | None = END_OF_TEXT) -> None:
        from tokenizers import Tokenizer

        if not isinstance(backend, Tokenizer):
            raise DataError(f"expected a tokenizers.Tokenizer, got {type(backend).__name__}")
        self._backend = backend
        eos_id = backend.token_to_id(eos) if eos else None
        if eos_id is None:
            raise DataError(f"the tokenizer has no end-of-text token {eos!r}")
        self._eos_id = int(eos_id)

    @property
    def vocab_size(self) -> int:
        return int(self._backend.get_vocab_size())

    @property
    def eos_id(self) -> int:
        return self._eos_id

    def encode(self, text: str) -> TokenIds:
        return np.asarray(self._backend.encode(text).ids, dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return str(self._backend.decode(list(ids)))

    def save(self, directory: Path) -> None:
        _save_backend(self._backend, directory)


def _save_backend(backend: object, directory: Path) -> None:
    """``tokenizer.json`` plus the small config ``AutoTokenizer`` reads beside it."""
    from tokenizers import Tokenizer

    assert isinstance(backend, Tokenizer)
    directory.mkdir(parents=True, exist_ok=True)
    backend.save(str(directory / TOKENIZER_FILE))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": END_OF_TEXT,
        "bos_token": END_OF_TEXT,
        "pad_token": END_OF_TEXT,
        "model_max_length": 1_000_000,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def train_bpe(texts: Iterable[str], vocab_size: int) -> HFTokenizer:
    """Byte-level BPE trained on ``texts`` (the public split): deterministic for fixed input."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return HFTokenizer(backend)


def load_checkpoint_tokenizer(directory: Path) -> TextTokenizer:
    """The tokenizer saved with a local checkpoint (``tokenizer.json``); byte-level when the
    file is ours and merge-free, so the fast path applies to `fedsys pretrain` outputs too."""
    path = directory / TOKENIZER_FILE
    if path.is_file():
        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(str(path))
        if _is_plain_bytes(backend):
            return ByteTokenizer()
        return HFTokenizer(backend, _eos_token(directory) or END_OF_TEXT)
    try:
        from transformers import AutoTokenizer

        loaded = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise DataError(f"no usable tokenizer in {directory}: {exc}") from None
    backend_tokenizer = getattr(loaded, "backend_tokenizer", None)
    if backend_tokenizer is None:
        raise DataError(f"the tokenizer in {directory} is not a fast (tokenizers) tokenizer")
    return HFTokenizer(backend_tokenizer, str(loaded.eos_token or END_OF_TEXT))


def _eos_token(directory: Path) -> str | None:
    config = directory / "tokenizer_config.json"
    if not config.is_file():
        return None
    value = json.loads(config.read_text()).get("eos_token")
    if isinstance(value, dict):
        value = value.get("content")
    return str(value) if value else None


def _is_plain_bytes(backend: object) -> bool:
    from tokenizers import Tokenizer

    assert isinstance(backend, Tokenizer)
    model = json.loads(backend.to_str())["model"]
    return (
        model.get("type") == "BPE"
        and not model.get("merges")
        and len(model.get("vocab", {})) == 257
        and backend.token_to_id(END_OF_TEXT) == 256
    )
