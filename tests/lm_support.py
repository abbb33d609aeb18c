"""A tiny Llama-style causal LM written to a directory from a ``transformers`` config (nothing
downloaded), with a byte-level tokenizer, a chat template and LoRA adapters made with peft."""

from __future__ import annotations

import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

EOS = "<|endoftext|>"
VOCAB = 257  # 256 bytes + end-of-text
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def byte_tokenizer(chat_template: str | None = CHAT_TEMPLATE) -> object:
    """A merge-free byte-level BPE as a fast Hugging Face tokenizer (ids = byte values)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    table = bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    vocab[EOS] = 256
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([EOS])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=EOS)
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def tiny_llama(seed: int = 0, context: int = 256) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=256,
        eos_token_id=256,
        pad_token_id=256,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        # Make end-of-text rare, so generations run to max_tokens (deterministic lengths).
        with torch.no_grad():
            model.lm_head.weight[256].fill_(0.0)
            model.lm_head.bias = None
    return model.eval()


def write_tiny_lm(directory: Path, seed: int = 0, *, chat: bool = True) -> Path:
    """A Hugging Face model directory (config, safetensors, tokenizer) for a tiny Llama."""
    directory.mkdir(parents=True, exist_ok=True)
    tiny_llama(seed).save_pretrained(str(directory))
    byte_tokenizer(CHAT_TEMPLATE if chat else None).save_pretrained(str(directory))  # type: ignore[attr-defined]
    return directory


def write_adapter(base_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter (peft format) over the model in ``base_dir``, with random B (not zero)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), local_files_only=True)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(base, config)
    model.save_pretrained(str(out))
    return out
