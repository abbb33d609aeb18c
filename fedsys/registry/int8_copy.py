"""The optional int8 serving copy: dynamic quantization of Linear layers for CPU inference.

``torch.ao.quantization.quantize_dynamic`` stores each Linear weight as int8 (one scale and
zero point per tensor) and quantizes activations on the fly per batch; everything else
(convolutions, norms, biases) stays fp32. That suits MLPs and the McMahan CNN, whose first
fully connected layer holds 96% of the parameters, and helps little for conv-heavy models
(the CIFAR ResNet keeps all its convolutions in fp32; only its classifier is int8): the
report below says how much of a model was quantized.

PyTorch keeps a quantized Linear's weight in an opaque packed form that only pickle can
save. Here the int8 values, scales and zero points are written as plain safetensors tensors
and the quantized module is rebuilt from them on load, bit for bit, without pickle. (No
maintained library does this for eager-mode dynamic quantization; hence this module.)
torch.ao.quantization is deprecated in favour of torchao but still ships with PyTorch;
its deprecation warnings are silenced inside this module's functions only (a process-wide
filter would also hide them from the user's own code, and pytest resets such filters).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

from fedsys.compress.quiet import quiet_ao
from fedsys.errors import ArtifactRejected
from fedsys.safetensors_bytes import canonical
from fedsys.training import evaluate

INT8_FORMAT = "fedsys-int8-dynamic/1"
_W = ".weight_int8"
_SCALE = ".weight_scale"
_ZERO = ".weight_zero_point"


@quiet_ao
def quantize_int8(module: nn.Module) -> nn.Module:
    """A dynamically quantized copy of ``module`` (Linear layers int8); ``module`` is untouched."""
    from torch.ao.quantization import quantize_dynamic

    src = copy.deepcopy(module).cpu().eval()
    quantized: nn.Module = quantize_dynamic(  # type: ignore[no-untyped-call]
        src, {nn.Linear}, dtype=torch.qint8
    )
    return quantized


def _dynamic_linears(module: nn.Module) -> Iterator[tuple[str, DynamicLinear]]:
    for name, child in module.named_modules():
        if isinstance(child, DynamicLinear):
            yield name, child


@quiet_ao
def int8_to_bytes(qmodule: nn.Module) -> bytes:
    """safetensors bytes of a module made by :func:`quantize_int8`."""
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[str, int | str]] = {}
    prefixes = []
    for name, child in _dynamic_linears(qmodule):
        prefixes.append(name + ".")
        weight = child.weight()  # type: ignore[no-untyped-call]
        tensors[name + _W] = weight.int_repr().contiguous()
        if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            tensors[name + _SCALE] = weight.q_per_channel_scales().to(torch.float64)
            tensors[name + _ZERO] = weight.q_per_channel_zero_points().to(torch.int64)
            layers[name] = {"scheme": "per_channel", "axis": int(weight.q_per_channel_axis())}
        else:
            tensors[name + _SCALE] = torch.tensor([weight.q_scale()], dtype=torch.float64)
            tensors[name + _ZERO] = torch.tensor([weight.q_zero_point()], dtype=torch.int64)
            layers[name] = {"scheme": "per_tensor", "axis": 0}
        bias = child.bias()  # type: ignore[no-untyped-call]
        if bias is not None:
            tensors[name + ".bias"] = bias.detach().contiguous()
    for key, value in qmodule.state_dict().items():
        if any(key.startswith(p) for p in prefixes):
            continue
        if not isinstance(value, torch.Tensor) or value.is_quantized:
            raise TypeError(f"cannot store {key!r} of the quantized model as a plain tensor")
        tensors[key] = value.detach().contiguous()
    metadata = {"format": INT8_FORMAT, "layers": json.dumps(layers, sort_keys=True)}
    return canonical(bytes(st_save(tensors, metadata=metadata)))


def _int8_metadata(data: bytes) -> dict[str, dict[str, int | str]]:
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    meta = header.get("__metadata__") or {}
    if meta.get("format") != INT8_FORMAT:
        raise ValueError(f"not a {INT8_FORMAT} file (format {meta.get('format')!r})")
    layers = json.loads(meta["layers"])
    if not isinstance(layers, dict):
        raise ValueError("layers metadata is not a mapping")
    return layers


def _dequantized(
    tensors: dict[str, torch.Tensor], name: str, spec: dict[str, int | str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fp32 weight, int8 quantized weight)`` of layer ``name`` from its stored parts."""
    q, scale, zero = tensors.pop(name + _W), tensors.pop(name + _SCALE), tensors.pop(name + _ZERO)
    if q.dtype != torch.int8:
        raise ValueError(f"{name}{_W} must be int8, found {q.dtype}")
    if spec.get("scheme") == "per_channel":
        axis = int(spec["axis"])
        shape = [1] * q.dim()
        shape[axis] = -1
        fp32 = (q.double() - zero.double().view(shape)) * scale.view(shape)
        qweight = torch.quantize_per_channel(
            fp32.float(), scale.double(), zero.long(), axis, torch.qint8
        )
    else:
        s, z = float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0])
        fp32 = (q.double() - z) * s
        qweight = torch.quantize_per_tensor(fp32.float(), s, z, torch.qint8)
    if not torch.equal(qweight.int_repr(), q):
        raise ValueError(f"{name}: stored int8 weights do not round-trip")
    return fp32.float(), qweight


@quiet_ao
def int8_from_bytes(data: bytes, fp32_module: nn.Module) -> nn.Module:
    """Rebuild the quantized module; ``fp32_module`` is a freshly built model of the same
    architecture (its weights are overwritten). ArtifactRejected if the file does not fit."""
    try:
        layers = _int8_metadata(data)
        tensors = dict(st_load(data))
        qweights = {}
        for name, spec in layers.items():
            fp32, qweights[name] = _dequantized(tensors, name, spec)
            tensors[name + ".weight"] = fp32
        fp32_module.load_state_dict(tensors, strict=True)
    except (SafetensorError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise ArtifactRejected(f"int8 weights do not fit the model: {exc}") from None
    qmodule = quantize_int8(fp32_module)
    found = dict(_dynamic_linears(qmodule))
    if set(found) != set(qweights):
        raise ArtifactRejected(
            f"int8 weights quantize layers {sorted(qweights)}, the model has {sorted(found)}"
        )
    for name, child in found.items():
        child.set_weight_bias(qweights[name], child.bias())  # type: ignore[no-untyped-call]
    return qmodule.eval()


@dataclass(frozen=True)
class Int8Report:
    """The int8 copy next to the fp32 model: bytes on disk and test accuracy."""

    fp32_bytes: int
    int8_bytes: int
    fp32_accuracy: float
    int8_accuracy: float
    quantized_layers: tuple[str, ...]
    quantized_parameters: int  # in the int8 layers' weights
    total_parameters: int

    def metrics(self) -> dict[str, float]:
        """Entries for a manifest's ``metrics`` (``accuracy`` there is the fp32 one)."""
        return {
            "int8_accuracy": self.int8_accuracy,
            "fp32_bytes": float(self.fp32_bytes),
            "int8_bytes": float(self.int8_bytes),
            "int8_parameter_share": self.quantized_parameters / max(self.total_parameters, 1),
        }


@quiet_ao
def compare_int8(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 1024,
    fp32_accuracy: float | None = None,
) -> tuple[Int8Report, bytes]:
    """Quantize ``module``, measure both variants on (x, y) on the CPU, and return the report
    with the int8 file's bytes. Pass ``fp32_accuracy`` when it is already known."""
    cpu = torch.device("cpu")
    fp32 = copy.deepcopy(module).cpu().eval()
    qmodule = quantize_int8(fp32)
    int8_blob = int8_to_bytes(qmodule)
    fp32_blob = st_save({k: v.contiguous() for k, v in fp32.state_dict().items()})
    with torch.inference_mode():
        if fp32_accuracy is None:
            fp32_accuracy = evaluate(fp32, x, y, batch_size=batch_size, device=cpu).accuracy
        int8_accuracy = evaluate(qmodule, x, y, batch_size=batch_size, device=cpu).accuracy
    layers = tuple(name for name, _ in _dynamic_linears(qmodule))
    linear_params = sum(
        m.weight.numel()
        for n, m in fp32.named_modules()
        if n in layers and isinstance(m, nn.Linear)
    )
    report = Int8Report(
        fp32_bytes=len(fp32_blob),
        int8_bytes=len(int8_blob),
        fp32_accuracy=float(fp32_accuracy),
        int8_accuracy=float(int8_accuracy),
        quantized_layers=layers,
        quantized_parameters=int(linear_params),
        total_parameters=sum(p.numel() for p in fp32.parameters()),
    )
    return report, int8_blob
