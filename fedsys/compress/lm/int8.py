"""int8 weight-only quantization of a causal LM's Linear layers, through torchao.

Each Linear weight becomes int8 with one symmetric scale per output channel (torchao's
``Int8WeightOnlyConfig``, per-row granularity); activations stay fp32, so the model keeps
its fp32 numerics but for the rounding of its weights. Embeddings and norms stay fp32.

torchao keeps the weights as ``Int8Tensor`` subclasses, which only pickle saves; here their
parts (``qdata``, ``scale``, ``zero_point``) go into plain safetensors tensors and loading
puts them back into a freshly built model as the same subclass (no library serialises these
tensors without pickle; hence this module). torchao is imported only here, when a language
model is quantized or an int8 variant is loaded.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

QUANTIZED_SUFFIXES = (".qdata", ".scale", ".zero_point")


def _config() -> Any:
    from torchao.quantization import Int8WeightOnlyConfig
    from torchao.quantization.granularity import PerRow

    # set_inductor_config=False: no process-wide torch.compile settings change behind us.
    return Int8WeightOnlyConfig(granularity=PerRow(), set_inductor_config=False)


def quantize_weights(model: nn.Module) -> nn.Module:
    """``model`` with every Linear weight int8 per output channel (in place; returned)."""
    from torchao.quantization import quantize_

    quantize_(model, _config())
    return model.eval()


def _int8_linears(model: nn.Module) -> dict[str, nn.Linear]:
    from torchao.quantization import Int8Tensor

    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and isinstance(m.weight, Int8Tensor)
    }


def int8_weight_count(model: nn.Module) -> tuple[int, int]:
    """(Linear layers whose weight is int8, Linear layers in all)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return len(_int8_linears(model)), len(linears)


def int8_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Plain tensors of a quantized model (int8 data, scales and zero points of each Linear
    weight; every other tensor as it is) and the metadata that locate the quantized ones."""
    layers = _int8_linears(model)
    tensors: dict[str, torch.Tensor] = {}
    blocks: dict[str, list[int]] = {}
    for name, layer in layers.items():
        weight: Any = layer.weight
        inner, attrs = weight.__tensor_flatten__()
        for part in inner:
            tensors[f"{name}.weight{'.' + part}"] = getattr(weight, part).detach().contiguous()
        blocks[name] = [int(b) for b in attrs["block_size"]]
    for key, value in model.state_dict().items():
        owner = key.rsplit(".", 1)[0]
        if owner in layers and key.endswith(".weight"):
            continue
        tensors[key] = value.detach().contiguous()
    return tensors, {"int8_layers": json.dumps(blocks, sort_keys=True)}


def load_int8_state(
    model: nn.Module, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> nn.Module:
    """Put :func:`int8_state`'s output back into ``model`` (freshly built, same architecture);
    ValueError names the first layer or tensor that does not fit."""
    from torchao.quantization import Int8Tensor

    blocks = {str(k): list(v) for k, v in json.loads(metadata["int8_layers"]).items()}
    rest = dict(tensors)
    for name, block in blocks.items():
        layer = model.get_submodule(name)
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"int8 layer {name!r} is not a Linear layer of the model")
        qdata = rest.pop(f"{name}.weight.qdata")
        scale = rest.pop(f"{name}.weight.scale")
        zero = rest.pop(f"{name}.weight.zero_point", None)
        if qdata.dtype != torch.int8:
            raise ValueError(f"{name}.weight.qdata must be int8, found {qdata.dtype}")
        if tuple(qdata.shape) != tuple(layer.weight.shape):
            raise ValueError(
                f"{name}: int8 weight {tuple(qdata.shape)}, model {tuple(layer.weight.shape)}"
            )
        if scale.shape[0] != qdata.shape[0] or not torch.isfinite(scale).all():
            raise ValueError(f"{name}.weight.scale must hold one finite scale per output row")
        weight = Int8Tensor(qdata, scale, block, torch.float32, zero_point=zero)
        layer.weight = nn.Parameter(weight, requires_grad=False)
    missing, unexpected = model.load_state_dict(rest, strict=False)
    quantized = {f"{name}.weight" for name in blocks}
    missing = [k for k in missing if k not in quantized]
    if missing or unexpected:
        raise ValueError(f"missing tensors {missing[:3]}, unexpected tensors {unexpected[:3]}")
    return model.eval()
