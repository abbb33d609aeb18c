"""Compressed variants: the public split, structured pruning, distillation, low-rank, int8
files, and the accuracy budget that keeps a lossy variant from being published."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedsys.compress.artifact import file_bytes, load_variant, variant_bytes
from fedsys.compress.distill import fit
from fedsys.compress.int8 import int8_module, quantize_static
from fedsys.compress.lowrank import factorise
from fedsys.compress.measure import within_budget
from fedsys.compress.pipeline import build_variants
from fedsys.compress.prune import prune_structured
from fedsys.compress.settings import CompressConfig
from fedsys.config import DataConfig, ModelConfig, build_config
from fedsys.data import clear_memo, client_partition, load_dataset, load_public
from fedsys.data.types import ArrayDataset, DatasetInfo
from fedsys.errors import ArtifactRejected, DataError
from fedsys.models import build_model, count_parameters

INFO = DatasetInfo(input_shape=(20,), num_classes=4)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: extra threads only add contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CONV_INFO = DatasetInfo(input_shape=(24,), num_classes=3)


def labelled_by(teacher: nn.Module, n: int, seed: int) -> ArrayDataset:
    """Gaussian rows labelled by ``teacher``'s argmax: the teacher is right by construction."""
    x = torch.randn(n, 20, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = teacher(x).argmax(1)
    return ArrayDataset(x=x.numpy(), y=y.numpy().astype(np.int64))


def teacher_mlp(info: DatasetInfo = INFO) -> tuple[nn.Module, ModelConfig]:
    cfg = ModelConfig(name="mlp", hidden=[64, 64])
    torch.manual_seed(0)
    model = build_model(cfg, info)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(3.0)  # sharper decision regions than the default init
    return model.eval(), cfg


# --- the public split ----------------------------------------------------------------------


def test_public_split_is_held_back_from_every_client_and_distinct_from_test() -> None:
    base = {"name": "synthetic", "num_partitions": 3, "synthetic_devices": 3}
    clear_memo()
    full, _, _ = load_dataset(DataConfig(**base), 0)
    cfg = DataConfig(**base, public_fraction=0.25)
    pool, test, _ = load_dataset(cfg, 0)
    public = load_public(cfg, 0)
    assert len(public) == round(0.25 * len(full)) and len(pool) + len(public) == len(full)
    rows = {row.tobytes() for row in public.x}
    for pid in range(3):
        assert not rows & {row.tobytes() for row in client_partition(cfg, 0, pid).x}
    assert not rows & {row.tobytes() for row in test.x}
    with pytest.raises(DataError, match="public_fraction"):
        load_public(DataConfig(**base), 0)
    clear_memo()


def test_public_split_from_a_user_file(tmp_path: Path) -> None:
    path = tmp_path / "public.npz"
    np.savez(path, x=np.ones((5, 20), np.float32), y=np.arange(5))
    public = load_public(DataConfig(public_path=path), 0)
    assert public.x.shape == (5, 20) and public.y.dtype == np.int64
    np.savez(path, x=np.ones((5, 20), np.float32))
    with pytest.raises(DataError, match="missing arrays"):
        load_public(DataConfig(public_path=path), 0)


def test_compress_enabled_holds_back_a_public_share_by_default() -> None:
    assert build_config({}, ["compress.enabled=true"]).data.public_fraction == 0.1
    assert build_config({}).data.public_fraction == 0.0


# --- variants ------------------------------------------------------------------------------


def test_pruning_removes_channels_and_neurons() -> None:
    torch.manual_seed(0)
    conv_cfg = ModelConfig(name="cnn1d", channels=16)
    conv = build_model(conv_cfg, CONV_INFO)
    small, small_cfg = prune_structured(conv, conv_cfg, CONV_INFO, 0.5, "l1")
    assert small_cfg.channels == 8
    shapes = [tuple(m.weight.shape) for m in small.modules() if isinstance(m, nn.Conv1d)]
    assert shapes == [(8, 1, 5), (8, 8, 5), (8, 8, 5)]
    assert small.classifier.weight.shape == (3, 8 * 24)  # type: ignore[union-attr]
    assert count_parameters(small) < 0.35 * count_parameters(conv)

    mlp, mlp_cfg = teacher_mlp()
    pruned, pruned_cfg = prune_structured(mlp, mlp_cfg, INFO, 0.75, "l2")
    assert pruned_cfg.hidden == [16, 16]
    widths = [m.out_features for m in pruned.modules() if isinstance(m, nn.Linear)]
    assert widths == [16, 16, 4]


def test_pruning_keeps_the_largest_channels() -> None:
    """Zeroing all but the kept channels leaves the pruned model's output unchanged."""
    torch.manual_seed(1)
    cfg = ModelConfig(name="cnn1d", channels=8)
    model = build_model(cfg, CONV_INFO).eval()
    with torch.no_grad():
        for conv in (m for m in model.features if isinstance(m, nn.Conv1d)):
            conv.weight[::2].mul_(1e-3)  # even channels are the weak half, in every layer
            conv.bias[::2].zero_()  # type: ignore[index]
    small, _ = prune_structured(model, cfg, CONV_INFO, 0.5, "l1")
    with torch.no_grad():
        for conv in (m for m in model.features if isinstance(m, nn.Conv1d)):
            conv.weight[::2].zero_()
    x = torch.randn(4, 24)
    torch.testing.assert_close(small.eval()(x), model(x), atol=1e-4, rtol=1e-4)


def test_distillation_beats_the_same_student_on_hard_labels() -> None:
    info = DatasetInfo(input_shape=(20,), num_classes=10)
    teacher, _ = teacher_mlp(info)
    public, test = labelled_by(teacher, 48, seed=1), labelled_by(teacher, 1000, seed=2)
    px, py = torch.from_numpy(public.x), torch.from_numpy(public.y)
    accuracies = {}
    # The transfer set is 5x the public rows, so hard labels get 5x the epochs: same steps.
    for name, mentor, epochs in (("hard", None, 200), ("distilled", teacher, 40)):
        torch.manual_seed(3)
        student = build_model(ModelConfig(name="mlp", hidden=[32]), info)
        fit(
            student,
            px,
            py,
            teacher=mentor,
            epochs=epochs,
            lr=3e-3,
            batch_size=32,
            temperature=4.0,
            alpha=0.9,
            mixup_copies=4,
            seed=0,
        )
        with torch.no_grad():
            pred = student(torch.from_numpy(test.x)).argmax(1).numpy()
        accuracies[name] = float((pred == test.y).mean())
    # Same student, public rows and optimizer steps: only the teacher's soft labels differ.
    assert accuracies["distilled"] > accuracies["hard"] + 0.02, accuracies


def test_lowrank_factorises_to_the_energy_and_rebuilds_from_ranks() -> None:
    teacher, cfg = teacher_mlp()
    with torch.no_grad():  # make the hidden-to-hidden weight exactly rank 3
        teacher[3].weight.copy_(torch.randn(64, 3) @ torch.randn(3, 64))  # type: ignore[index]
    low = build_model(cfg, INFO)
    low.load_state_dict(teacher.state_dict())
    ranks = factorise(low, None, 0.999)
    assert ranks["3"] == 3 and count_parameters(low) < count_parameters(teacher)
    x = torch.randn(8, 20)
    torch.testing.assert_close(low(x), teacher(x), atol=1e-3, rtol=1e-3)
    data = variant_bytes(low, variant="lowrank", quantized=False, ranks=ranks)
    torch.testing.assert_close(load_variant(data, cfg, INFO)(x), low(x))


def test_int8_quantizes_every_linear_and_conv_and_reloads_bit_for_bit() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(name="cnn1d", channels=16)
    model = build_model(cfg, CONV_INFO).eval()
    calibration = torch.randn(64, 24)
    qmodule = quantize_static(model, calibration)
    data = variant_bytes(qmodule, variant="int8", quantized=True, ranks={})
    loaded = load_variant(data, cfg, CONV_INFO)
    float_layers = [m for m in loaded.modules() if isinstance(m, nn.Linear | nn.Conv1d)]
    assert float_layers == []
    x = torch.randn(5, 24)
    assert torch.equal(loaded(x), qmodule(x))
    assert len(data) < 0.5 * file_bytes(model)  # scales and headers weigh on a tiny model
    wrong = ModelConfig(name="cnn1d", channels=8)
    with pytest.raises(ArtifactRejected, match="do not fit the model"):
        load_variant(data, wrong, CONV_INFO)


def test_variant_over_the_accuracy_budget_is_refused() -> None:
    assert within_budget(0.90, 0.895, 0.01) is None
    assert "loses 2.00 accuracy points" in (within_budget(0.90, 0.88, 0.01) or "")
    teacher, cfg = teacher_mlp()
    public, test = labelled_by(teacher, 64, seed=1), labelled_by(teacher, 400, seed=2)
    settings = CompressConfig(
        variants=["int8", "pruned"],
        prune_fraction=0.9,
        finetune_epochs=0,
        accuracy_budget=0.05,
        latency_repeats=1,
    )
    report = build_variants(teacher.state_dict(), cfg, INFO, public, test, settings)
    by_name = {v.name: v for v in report.variants}
    assert report.fp32.accuracy == 1.0
    assert by_name["int8"].refused is None and by_name["int8"].metrics.accuracy >= 0.95
    assert by_name["pruned"].refused is not None
    assert "compress.accuracy_budget=0.05" in by_name["pruned"].refused
    assert [v.name for v in report.accepted()] == ["int8"]


def test_int8_variant_from_the_fx_engine_is_refused_with_the_way_out() -> None:
    cfg = ModelConfig(name="cnn1d", channels=4)
    shell = build_model(cfg, CONV_INFO)
    with pytest.raises(ArtifactRejected, match="run `fedsys compress` again"):
        int8_module({}, {"int8_layers": "{}"}, shell, CONV_INFO.input_shape)
