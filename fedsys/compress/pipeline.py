"""From a global model to its measured variants: build, tune on public data, judge on test.

Every variant starts from the same fp32 model and is measured on the same test rows; the
fp32 figures are measured alongside, so the accuracy budget compares like with like.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from fedsys.compress.artifact import file_bytes, load_variant, variant_bytes
from fedsys.compress.distill import fit, student_config
from fedsys.compress.int8 import quantize_static
from fedsys.compress.lowrank import factorise
from fedsys.compress.measure import VariantMetrics, measure, within_budget
from fedsys.compress.prune import prune_structured
from fedsys.compress.settings import CompressConfig, VariantName
from fedsys.config import ModelConfig
from fedsys.data.types import ArrayDataset, DatasetInfo
from fedsys.errors import ConfigError, DataError
from fedsys.models import build_model, count_parameters

log = logging.getLogger("fedsys")


@dataclass(frozen=True)
class Variant:
    """One built variant: its file, the architecture that file fits, its figures, and
    ``refused`` (why it is not to be published) or None."""

    name: VariantName
    model: ModelConfig
    data: bytes
    metrics: VariantMetrics
    refused: str | None


@dataclass(frozen=True)
class CompressReport:
    """The fp32 baseline and every requested variant, accepted or refused."""

    fp32: VariantMetrics
    variants: tuple[Variant, ...]

    def accepted(self) -> tuple[Variant, ...]:
        return tuple(v for v in self.variants if v.refused is None)


def _tensors(data: ArrayDataset, info: DatasetInfo) -> tuple[torch.Tensor, torch.Tensor]:
    if tuple(data.x.shape[1:]) != info.input_shape:
        raise DataError(
            f"public split rows have shape {tuple(data.x.shape[1:])}, the model takes "
            f"{info.input_shape}"
        )
    if len(data) and (data.y.min() < 0 or data.y.max() >= info.num_classes):
        raise DataError(f"public split labels must lie in 0..{info.num_classes - 1}")
    return torch.from_numpy(data.x), torch.from_numpy(data.y)


class _Builder:
    """Holds the shared inputs of one compression run and builds variants on demand."""

    def __init__(
        self,
        state: Mapping[str, torch.Tensor],
        model_cfg: ModelConfig,
        info: DatasetInfo,
        public: ArrayDataset,
        test: ArrayDataset,
        cfg: CompressConfig,
        seed: int,
    ) -> None:
        self.cfg, self.info, self.model_cfg, self.seed = cfg, info, model_cfg, seed
        self.teacher = build_model(model_cfg, info)
        self.teacher.load_state_dict(dict(state), strict=True)
        self.teacher.eval()
        self.public_x, self.public_y = _tensors(public, info)
        if len(self.public_y) == 0:
            raise DataError("the public split is empty")
        self.test_x, self.test_y = _tensors(test, info)
        self.fp32 = self._measure(self.teacher, file_bytes(self.teacher))
        self._pruned: tuple[nn.Module, ModelConfig] | None = None

    def _measure(self, module: nn.Module, size: int) -> VariantMetrics:
        params = count_parameters(module)
        return measure(
            module, size, params, self.test_x, self.test_y, repeats=self.cfg.latency_repeats
        )

    def _tune(self, student: nn.Module, epochs: int) -> nn.Module:
        c = self.cfg
        return fit(
            student,
            self.public_x,
            self.public_y,
            teacher=self.teacher,
            epochs=epochs,
            lr=c.lr,
            batch_size=c.batch_size,
            temperature=c.temperature,
            alpha=c.distill_alpha,
            mixup_copies=c.mixup_copies,
            seed=self.seed,
        )

    def _calibration(self) -> torch.Tensor:
        return self.public_x[: self.cfg.calibration_samples]

    def pruned(self) -> tuple[nn.Module, ModelConfig]:
        if self._pruned is None:
            small, small_cfg = prune_structured(
                self.teacher,
                self.model_cfg,
                self.info,
                self.cfg.prune_fraction,
                self.cfg.prune_criterion,
            )
            self._pruned = self._tune(small, self.cfg.finetune_epochs), small_cfg
        return self._pruned

    def build(self, name: str) -> tuple[nn.Module, ModelConfig, dict[str, int], bool]:
        """``(module, architecture, low-rank map, quantized)`` of variant ``name``."""
        if name == "int8":
            return quantize_static(self.teacher, self._calibration()), self.model_cfg, {}, True
        if name == "pruned":
            module, small_cfg = self.pruned()
            return module, small_cfg, {}, False
        if name == "pruned_int8":
            module, small_cfg = self.pruned()
            return quantize_static(module, self._calibration()), small_cfg, {}, True
        if name == "distilled":
            student_cfg = student_config(self.model_cfg, self.cfg.student)
            torch.manual_seed(self.seed)
            student = build_model(student_cfg, self.info)
            return self._tune(student, self.cfg.distill_epochs), student_cfg, {}, False
        if name == "lowrank":
            module = copy.deepcopy(self.teacher)
            ranks = factorise(module, self.cfg.lowrank_rank, self.cfg.lowrank_energy)
            if not ranks:
                raise ConfigError(
                    "compress: no Linear or 1x1 conv layer gets smaller at "
                    f"lowrank_energy={self.cfg.lowrank_energy} / lowrank_rank="
                    f"{self.cfg.lowrank_rank}"
                )
            return self._tune(module, self.cfg.finetune_epochs), self.model_cfg, ranks, False
        raise ConfigError(f"compress: unknown variant {name!r}")

    def _source_parameters(self, name: str) -> int:
        return count_parameters(self.pruned()[0] if name == "pruned_int8" else self.teacher)

    def variant(self, name: VariantName) -> Variant:
        module, arch, ranks, quantized = self.build(name)
        data = variant_bytes(module, variant=name, quantized=quantized, ranks=ranks)
        # Measure what a reader of the file gets, so the figures describe the artifact.
        served = load_variant(data, arch, self.info)
        metrics = self._measure(served, len(data))
        if quantized:  # quantized modules hold packed weights, not parameters
            metrics = metrics.model_copy(update={"parameters": self._source_parameters(name)})
        refused = within_budget(self.fp32.accuracy, metrics.accuracy, self.cfg.accuracy_budget)
        return Variant(name=name, model=arch, data=data, metrics=metrics, refused=refused)


def build_variants(
    state: Mapping[str, torch.Tensor],
    model_cfg: ModelConfig,
    info: DatasetInfo,
    public: ArrayDataset,
    test: ArrayDataset,
    cfg: CompressConfig,
    *,
    seed: int = 0,
) -> CompressReport:
    """Every variant in ``cfg.variants`` of the model (``state``, ``model_cfg``), measured.

    A variant that cannot be built for this architecture (e.g. pruning a ResNet) is reported
    as refused with the reason, so the others still come out.
    """
    builder = _Builder(state, model_cfg, info, public, test, cfg, seed)
    variants = []
    for name in cfg.variants:
        try:
            variants.append(builder.variant(name))
        except ConfigError as exc:
            log.warning("compress: variant %s skipped: %s", name, exc)
    return CompressReport(fp32=builder.fp32, variants=tuple(variants))
