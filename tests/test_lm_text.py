"""Text for the language-model task: corpora, the public/client split, tokenizers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lm_task_support import lm_config, write_jsonl

from fedsys.errors import ConfigError, DataError
from fedsys.lm_config import TextConfig
from fedsys.tasks.lm.corpus import directory_corpus, jsonl_corpus, stdlib_corpus
from fedsys.tasks.lm.split import choose_units, hold_out
from fedsys.tasks.lm.text import load_text
from fedsys.tasks.lm.tokenizer import ByteTokenizer, load_checkpoint_tokenizer, train_bpe


def test_stdlib_corpus_has_one_unit_per_top_level_package_and_a_stable_hash() -> None:
    corpus = stdlib_corpus()
    assert {"json", "asyncio", "email", "typing"} <= set(corpus.units)
    assert "test" not in corpus.units
    assert len(corpus.sha256) == 64 and stdlib_corpus().sha256 == corpus.sha256
    json_docs = corpus.units["json"].read()
    assert any("def dumps" in doc for doc in json_docs)


def test_public_units_are_never_clients_and_the_choice_is_seeded() -> None:
    corpus = stdlib_corpus()
    cfg = TextConfig(public_fraction=0.3)
    choice = choose_units(corpus, cfg, 10, seed=0)
    assert len(choice.clients) == 10 and not set(choice.public) & set(choice.clients)
    assert abs(len(choice.public) - 0.3 * len(corpus.units)) <= 1
    assert choose_units(corpus, cfg, 10, seed=0) == choice
    assert choose_units(corpus, cfg, 10, seed=1).public != choice.public
    with pytest.raises(DataError, match=r"data\.num_partitions=1000"):
        choose_units(corpus, cfg, 1000, seed=0)


def test_jsonl_clients_hold_their_own_text_with_held_out_chunks(tmp_path: Path) -> None:
    cfg = lm_config(write_jsonl(tmp_path / "t.jsonl"))
    tokenizer, data = load_text(cfg.lm, 3, seed=3)
    assert len(data.clients) == 3 and len(data.public_units) == 1
    for split in data.clients:
        assert split.train.shape[1] == 32 and len(split.test) >= 1
        text = tokenizer.decode(split.train[0].tolist())
        assert split.name in {"alpha", "beta", "gamma", "delta"} and text
    iid = cfg.lm.model_copy(update={"text": cfg.lm.text.model_copy(update={"partitioner": "iid"})})
    _, mixed = load_text(iid, 3, seed=3)
    assert [c.name for c in mixed.clients] == ["iid-0", "iid-1", "iid-2"]


def test_bad_user_text_names_the_line_or_the_folder(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"client": "a", "text": "x"}\n{"text": "no client"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: needs a \"client\""):
        jsonl_corpus(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no sub-directory"):
        directory_corpus(tmp_path / "empty")
    with pytest.raises(DataError, match="at least 2"):
        hold_out("tiny", np.zeros((1, 8), dtype=np.int64), 0.1, 0, None)


def test_directory_corpus_has_one_unit_per_sub_directory(tmp_path: Path) -> None:
    for client in ("ann", "bob"):
        (tmp_path / client).mkdir()
        (tmp_path / client / "a.txt").write_text(f"{client} writes\n" * 10)
    corpus = directory_corpus(tmp_path)
    assert sorted(corpus.units) == ["ann", "bob"]
    assert corpus.units["bob"].read() == ["bob writes\n" * 10]


def test_byte_tokenizer_round_trips_and_saves_as_a_huggingface_tokenizer(tmp_path: Path) -> None:
    tok = ByteTokenizer()
    text = "def f(x):\n    return 'é'\n"
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.max() < 256 and tok.decode(ids.tolist()) == text
    tok.save(tmp_path)
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(text).ids == ids.tolist()
    assert isinstance(load_checkpoint_tokenizer(tmp_path), ByteTokenizer)


def test_bpe_trained_on_public_text_is_deterministic_and_reloads(tmp_path: Path) -> None:
    texts = ["def function(argument):\n    return argument\n" * 50, "class Thing:\n    pass\n" * 50]
    first, second = train_bpe(texts, 300), train_bpe(texts, 300)
    sample = "def function(thing):\n    pass\n"
    assert first.encode(sample).tolist() == second.encode(sample).tolist()
    assert len(first.encode(sample)) < len(sample.encode())
    first.save(tmp_path)
    reloaded = load_checkpoint_tokenizer(tmp_path)
    assert reloaded.encode(sample).tolist() == first.encode(sample).tolist()
    assert reloaded.decode(reloaded.encode(sample).tolist()) == sample


def test_config_keeps_each_task_to_its_own_sections() -> None:
    from fedsys.config import build_config

    with pytest.raises(ConfigError, match="the lm section needs task: language_model"):
        build_config({"lm": {"size": "lm_small"}})
    with pytest.raises(ConfigError, match=r"remove data.name"):
        build_config({"task": "language_model", "data": {"name": "synthetic"}})
    with pytest.raises(ConfigError, match="client_ranks"):
        build_config({"task": "language_model", "lm": {"lora": {"client_ranks": [2]}}})
