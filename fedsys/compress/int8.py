"""Static int8 quantization of every Linear and convolution (torchao pt2e, x86 oneDNN kernels).

``torch.export`` captures the model with a dynamic batch dimension, torchao's
``prepare_pt2e`` with the ``X86InductorQuantizer`` inserts observers, a calibration pass over
public samples fixes each activation's scale, and ``convert_pt2e`` yields the reference
program: int8 weight constants with quantize/dequantize around fp32 operators. Weights are
per-channel symmetric int8; activations are unsigned 7-bit (0..127, ``reduce_range``), the
range CPUs without VNNI accumulate without saturating (8-bit lost 7 accuracy points on the
10M MLP on such a CPU). The reference program is slow as it stands (it dequantizes every
weight per call), so it is lowered the way torchao's ``lower_pt2e_quantized_to_x86`` does
(Inductor's freezing passes fuse each q/dq pattern into oneDNN int8 ops, no C++ compiler
involved), but keeping the batch dimension dynamic, which torchao's function does not.

The reference program's constants (int8 weights, scales, fp32 biases) and the scale and zero
point of each activation quantize/dequantize node are stored as plain safetensors tensors;
loading re-exports the same architecture, puts them back bit for bit and lowers again (no
maintained library serialises a pt2e program without pickle; hence this module).
"""

from __future__ import annotations

import copy
import functools
import json
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch
from torch import nn
from torch.fx import GraphModule

from fedsys.errors import ArtifactRejected

CALIBRATION_BATCH = 256
ENGINE = "torchao-pt2e-x86/1"
_Q_OPS = (
    "quantized_decomposed.quantize_per_tensor.default",
    "quantized_decomposed.dequantize_per_tensor.default",
)
_CONST = "const."
_F = TypeVar("_F", bound=Callable[..., Any])


def _quiet_pytree(fn: _F) -> _F:
    """Copying an exported program makes torch's own pytree code warn about its own
    ``LeafSpec`` check once per node; the notice carries no action for callers."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`")
            return fn(*args, **kwargs)

    return cast(_F, wrapper)


_QPARAMS = "qparams."


class Int8Program(nn.Module):
    """The lowered int8 program, with the reference program whose tensors are stored."""

    def __init__(self, reference: GraphModule, lowered: GraphModule) -> None:
        super().__init__()
        self.lowered = lowered
        object.__setattr__(self, "reference", reference)  # not a submodule: stored apart

    def train(self, mode: bool = True) -> Int8Program:
        """Inference only: an exported program refuses ``train()``/``eval()`` calls."""
        self.training = False
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.lowered(x)
        return out


def _attr(module: nn.Module, target: str) -> Any:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _batch_dynamic(example: torch.Tensor) -> tuple[dict[int, Any]]:
    return ({0: torch.export.Dim.DYNAMIC},)


@_quiet_pytree
def _reference(module: nn.Module, calibration: torch.Tensor) -> GraphModule:
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config(reduce_range=True))
    src = copy.deepcopy(module).cpu().eval()
    example = calibration[:CALIBRATION_BATCH]
    if len(example) < 2:  # a batch of one would be specialised by export
        example = example.repeat(2, *[1] * (example.dim() - 1))
    exported = torch.export.export(src, (example,), dynamic_shapes=_batch_dynamic(example))
    prepared = prepare_pt2e(exported.module(), quantizer)  # type: ignore[arg-type]
    with torch.no_grad():
        for begin in range(0, len(calibration), CALIBRATION_BATCH):
            prepared(calibration[begin : begin + CALIBRATION_BATCH])
    converted: GraphModule = convert_pt2e(prepared)
    return converted


@_quiet_pytree
def lower_to_x86(reference: GraphModule, example: torch.Tensor) -> GraphModule:
    """torchao's ``lower_pt2e_quantized_to_x86`` with a dynamic batch dimension (torchao's
    exports with static shapes); private Inductor passes, as torchao itself uses them."""
    from torch._export.utils import _is_cia_op
    from torch._inductor.constant_folding import constant_fold
    from torch._inductor.fx_passes.freezing_patterns import freezing_passes

    decompositions = torch.export.default_decompositions()
    for op in list(decompositions):
        if not _is_cia_op(op):
            del decompositions[op]
    with torch.no_grad():
        exported = torch.export.export(
            copy.deepcopy(reference),
            (example,),
            dynamic_shapes=_batch_dynamic(example),
            strict=True,
        )
        lowered: GraphModule = exported.run_decompositions(decompositions).module()  # type: ignore[assignment]
        graph = lowered.graph
        for node in list(graph.nodes):
            if node.target == torch.ops.aten.t.default:
                with graph.inserting_before(node):
                    permuted = graph.call_function(
                        torch.ops.aten.permute.default, (node.args[0], [1, 0])
                    )
                node.replace_all_uses_with(permuted)
                graph.erase_node(node)
            elif node.target == torch.ops.aten.view.default:
                # the fused convolutions return channels-last outputs a flatten's view rejects
                node.target = torch.ops.aten.reshape.default
        lowered.recompile()
        freezing_passes(lowered, (example,))
        constant_fold(lowered)
    return lowered


def _example(calibration: torch.Tensor) -> torch.Tensor:
    return torch.zeros((2, *calibration.shape[1:]), dtype=torch.float32)


def quantize_static(module: nn.Module, calibration: torch.Tensor) -> Int8Program:
    """An int8 copy of ``module`` calibrated on ``calibration`` (public inputs, float32)."""
    if len(calibration) == 0:
        raise ArtifactRejected("static int8 needs at least one calibration sample")
    calibration = calibration.float()
    reference = _reference(module, calibration)
    return Int8Program(reference, lower_to_x86(reference, _example(calibration))).eval()


def int8_tensors(qmodule: Int8Program) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Plain tensors (the reference program's int8 weights, scales and biases; each
    activation's scale and zero point) and the metadata, for :func:`quantize_static`'s output."""
    tensors: dict[str, torch.Tensor] = {}
    qnodes: list[str] = []
    reference: GraphModule = qmodule.reference  # type: ignore[assignment]
    for node in reference.graph.nodes:
        if node.op == "get_attr":
            value = _attr(reference, str(node.target))
            if isinstance(value, torch.Tensor):
                tensors[_CONST + str(node.target)] = value.detach().clone().contiguous()
        elif str(node.target) in _Q_OPS:
            qnodes.append(node.name)
            tensors[_QPARAMS + node.name] = torch.tensor(
                [float(node.args[1]), float(node.args[2])], dtype=torch.float64
            )
    return tensors, {"int8_engine": ENGINE, "int8_nodes": json.dumps(sorted(qnodes))}


def int8_module(
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str],
    fp32_shell: nn.Module,
    input_shape: tuple[int, ...],
) -> Int8Program:
    """Rebuild the int8 program from :func:`int8_tensors`' output. ``fp32_shell`` is a
    freshly built model of the same architecture; ArtifactRejected when the file does not fit."""
    engine = metadata.get("int8_engine")
    if engine != ENGINE:
        raise ArtifactRejected(
            f"int8 variant made by engine {engine or 'torch.ao FX (fedsys < pt2e)'!r}, this "
            f"version reads {ENGINE!r}: run `fedsys compress` again for this version"
        )
    try:
        example = torch.zeros((2, *input_shape))
        reference = _reference(fp32_shell, example)
        expected = set(json.loads(metadata["int8_nodes"]))
        for node in reference.graph.nodes:
            if node.op == "get_attr":
                current = _attr(reference, str(node.target))
                if not isinstance(current, torch.Tensor):
                    continue
                stored = tensors[_CONST + str(node.target)]
                if stored.dtype != current.dtype or stored.shape != current.shape:
                    raise ValueError(
                        f"{node.target}: stored {stored.dtype}{tuple(stored.shape)}, "
                        f"model {current.dtype}{tuple(current.shape)}"
                    )
                if stored.is_floating_point() and not bool(torch.isfinite(stored).all()):
                    raise ValueError(f"{node.target} holds non-finite values")
                current.data = stored.clone()
            elif str(node.target) in _Q_OPS:
                expected.discard(node.name)
                scale, zero = tensors[_QPARAMS + node.name].tolist()
                if not (scale > 0.0 and scale < float("inf")) or not 0 <= zero <= 255:
                    raise ValueError(f"{node.name}: scale {scale}, zero point {zero}")
                node.args = (node.args[0], scale, int(zero), *node.args[3:])
        if expected:
            raise ValueError(f"activations {sorted(expected)} are not in the model")
        reference.recompile()
        lowered = lower_to_x86(reference, example)
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
        raise ArtifactRejected(f"int8 weights do not fit the model: {exc}") from None
    return Int8Program(reference, lowered).eval()
