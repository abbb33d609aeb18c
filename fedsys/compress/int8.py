"""Static int8 quantization of every Linear and convolution (FX graph mode, x86 backend).

``prepare_fx`` inserts observers, a calibration pass over public samples fixes each
activation's scale, and ``convert_fx`` swaps in quantized modules (fused with their ReLU)
that run int8 kernels on the CPU. Weights are per-channel symmetric int8; activations are
unsigned 7-bit (0..127), the range the x86 kernels accumulate without overflow.

PyTorch keeps quantized weights in an opaque packed form that only pickle saves. Here the
int8 values, per-channel scales and the activation scales go into plain safetensors tensors,
and loading rebuilds the same graph from the architecture and puts them back bit for bit
(no maintained library serialises FX-converted modules without pickle; hence this module).
"""

from __future__ import annotations

import copy
import json
from typing import Any, cast

import torch
from torch import nn
from torch.ao.nn.quantized import Conv1d as QConv1d
from torch.ao.nn.quantized import Conv2d as QConv2d
from torch.ao.nn.quantized import Linear as QLinear
from torch.fx import GraphModule

from fedsys.compress.quiet import quiet_ao
from fedsys.errors import ArtifactRejected
from fedsys.fx_tracing import FX_TRACING

_QUANTIZED = (QConv1d, QConv2d, QLinear)
CALIBRATION_BATCH = 256


def _qconfig_mapping() -> object:
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    qconfig = QConfig(  # type: ignore[no-untyped-call]
        activation=MinMaxObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=127),
        weight=PerChannelMinMaxObserver.with_args(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric
        ),
    )
    return QConfigMapping().set_global(qconfig)


@quiet_ao
def _convert(module: nn.Module, calibration: torch.Tensor) -> GraphModule:
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    src = copy.deepcopy(module).cpu().eval()
    with FX_TRACING:  # tracing patches nn.Module.__call__ for the whole process
        prepared = prepare_fx(src, _qconfig_mapping(), (calibration[:1],))  # type: ignore[arg-type]
        with torch.inference_mode():
            for begin in range(0, len(calibration), CALIBRATION_BATCH):
                prepared(calibration[begin : begin + CALIBRATION_BATCH])
        converted: GraphModule = convert_fx(prepared)
    return converted.eval()


def quantize_static(module: nn.Module, calibration: torch.Tensor) -> GraphModule:
    """An int8 copy of ``module`` calibrated on ``calibration`` (public inputs, float32)."""
    if len(calibration) == 0:
        raise ArtifactRejected("static int8 needs at least one calibration sample")
    return _convert(module, calibration.float())


def _layers(module: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in module.named_modules() if isinstance(m, _QUANTIZED)}


@quiet_ao
def int8_tensors(qmodule: GraphModule) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Plain tensors (int8 weights, float64 scales, int64 zero points, biases, activation
    scales) and the metadata that locate them, for a module made by :func:`quantize_static`."""
    tensors: dict[str, torch.Tensor] = {}
    axes: dict[str, int] = {}
    for name, layer in _layers(qmodule).items():
        weight = layer.weight()  # type: ignore[operator]
        bias = layer.bias()  # type: ignore[operator]
        tensors[f"{name}.weight_int8"] = weight.int_repr().contiguous()
        tensors[f"{name}.weight_scale"] = weight.q_per_channel_scales().to(torch.float64)
        tensors[f"{name}.weight_zero_point"] = weight.q_per_channel_zero_points().to(torch.int64)
        axes[name] = int(weight.q_per_channel_axis())
        if bias is not None:
            tensors[f"{name}.bias"] = bias.detach().float().contiguous()
        out_scale, out_zero = cast(Any, layer).scale, cast(Any, layer).zero_point
        tensors[f"{name}.out_scale"] = torch.tensor([float(out_scale)], dtype=torch.float64)
        tensors[f"{name}.out_zero_point"] = torch.tensor([int(out_zero)])
    for name, buffer in qmodule.named_buffers():
        if not buffer.is_quantized:
            tensors[name] = buffer.detach().clone().contiguous()
    return tensors, {"int8_layers": json.dumps(axes, sort_keys=True)}


@quiet_ao
def int8_module(
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str],
    fp32_shell: nn.Module,
    input_shape: tuple[int, ...],
) -> GraphModule:
    """Rebuild the quantized module from :func:`int8_tensors`' output. ``fp32_shell`` is a
    freshly built model of the same architecture; ArtifactRejected when the file does not fit."""
    try:
        axes = {str(k): int(v) for k, v in json.loads(metadata["int8_layers"]).items()}
        qmodule = _convert(fp32_shell, torch.zeros((1, *input_shape)))
        layers = _layers(qmodule)
        if set(layers) != set(axes):
            raise ValueError(f"int8 layers {sorted(axes)}, the model has {sorted(layers)}")
        for name, layer in layers.items():
            q = tensors[f"{name}.weight_int8"]
            scale = tensors[f"{name}.weight_scale"]
            zero = tensors[f"{name}.weight_zero_point"]
            if q.dtype != torch.int8:
                raise ValueError(f"{name}.weight_int8 must be int8, found {q.dtype}")
            expected = layer.weight().shape  # type: ignore[operator]
            if q.shape != expected:
                raise ValueError(f"{name}: int8 weight {tuple(q.shape)}, model {tuple(expected)}")
            shape = [1] * q.dim()
            shape[axes[name]] = -1
            fp32 = ((q.double() - zero.double().view(shape)) * scale.view(shape)).float()
            qweight = torch.quantize_per_channel(
                fp32, scale.double(), zero.long(), axes[name], torch.qint8
            )
            if not torch.equal(qweight.int_repr(), q):
                raise ValueError(f"{name}: stored int8 weights do not round-trip")
            layer.set_weight_bias(qweight, tensors.get(f"{name}.bias"))  # type: ignore[operator]
            cast(Any, layer).scale = float(tensors[f"{name}.out_scale"][0])
            cast(Any, layer).zero_point = int(tensors[f"{name}.out_zero_point"][0])
        for name, buffer in qmodule.named_buffers():
            if not buffer.is_quantized:
                buffer.copy_(tensors[name])
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
        raise ArtifactRejected(f"int8 weights do not fit the model: {exc}") from None
    return qmodule.eval()
