"""A tiny Llama-style causal LM written to a directory from a ``transformers`` config (nothing
downloaded), with a byte-level tokenizer, a chat template and LoRA adapters made with peft."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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


def base_into_registry(root: Path, seed: int = 0) -> tuple[Path, str]:
    """A tiny base under ``root/bases/`` and its sha256 (what a version names)."""
    from fedsys.registry.lm_base import tensors_sha256

    directory = write_tiny_lm(root / "bases" / f"tiny-{seed}", seed)
    return directory, tensors_sha256(tiny_llama(seed).state_dict())


def adapter_tensors(seed: int, base_seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """(peft config dict, adapter tensors as numpy) of a random LoRA adapter of the base."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(tiny_llama(base_seed), config)
    tensors = {k: v.detach().numpy().copy() for k, v in get_peft_model_state_dict(model).items()}
    as_dict = config.to_dict()
    as_dict["target_modules"] = sorted(as_dict["target_modules"])
    return json.loads(json.dumps(as_dict, default=str)), tensors


def publish_lm(
    registry: Any,
    key: Any,
    name: str,
    *,
    base: str,
    base_sha256: str,
    adapter_seed: int | None = None,
    merged_seed: int | None = None,
) -> Any:
    """Publish a language-model version: a LoRA adapter (``adapter_seed``), or whole weights
    (``merged_seed``: the tiny Llama of that seed) on the base's config and tokenizer."""
    from fedsys.registry import Lineage
    from fedsys.registry.version_manifest import LanguageModelVersion

    if adapter_seed is not None:
        config, tensors = adapter_tensors(adapter_seed)
        spec = LanguageModelVersion(
            kind="adapter", base=base, base_sha256=base_sha256, adapter_config=config
        )
    else:
        assert merged_seed is not None
        tensors = {k: v.numpy().copy() for k, v in tiny_llama(merged_seed).state_dict().items()}
        spec = LanguageModelVersion(kind="merged", base=base, base_sha256=base_sha256)
    return registry.publish(
        name,
        tensors,
        model={"name": "llama", "size": "tiny"},
        input_shape=[256],
        num_classes=VOCAB,
        round=1,
        metrics={"perplexity": 100.0},
        lineage=Lineage(clients=2, strategy="fedavg"),
        signing_key=key,
        language_model=spec,
    )
