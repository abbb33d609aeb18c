"""The whole experiment as one pydantic model, loaded from YAML plus dotted overrides.

Defaults describe the quickstart (MNIST-1D, 10 clients, IID, 1-D CNN, FedAvg), so an empty
YAML file is a valid experiment. Every section forbids unknown keys, so a typo fails at load
time with the field path instead of being silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from fedsys.codec.params import QUANTIZE_BITS, DownlinkScheme, PipelineParams, QuantizeScheme
from fedsys.compress.settings import CompressConfig
from fedsys.config_rules import CROSS_SECTION_RULES
from fedsys.config_section import Section
from fedsys.defense_config import AttackConfig, DefenseConfig
from fedsys.defense_config import AttackName as AttackName  # re-exported
from fedsys.errors import ConfigError
from fedsys.lm_config import LMConfig, TaskName
from fedsys.memory import FreedMemory
from fedsys.publish_config import PublishConfig, ServeConfig
from fedsys.scale_config import FedBuffConfig, FederatedEvalConfig, PopulationConfig
from fedsys.strategy_traits import ROBUST_STRATEGIES as ROBUST_STRATEGIES  # re-exported
from fedsys.strategy_traits import STRATEGY_TRAITS
from fedsys.strategy_traits import StrategyName as StrategyName  # re-exported

DatasetName = Literal["mnist1d", "synthetic", "mnist", "fashion_mnist", "cifar10"]
PartitionerName = Literal["iid", "dirichlet", "shards", "natural"]


class DataConfig(Section):
    """Which data, where it lives, and how it is split across clients."""

    name: DatasetName = "mnist1d"
    path: Path | None = Field(
        default=None, description="Directory with the user's files (mnist, fashion_mnist, cifar10)."
    )
    num_partitions: int = Field(default=10, ge=1, description="Number of (virtual) clients.")
    partitioner: PartitionerName = "iid"
    dirichlet_alpha: float = Field(default=0.5, gt=0)
    min_partition_size: int = Field(default=10, ge=0)
    shards_per_client: int = Field(default=2, ge=1)
    synthetic_alpha: float = Field(default=1.0, ge=0, description="FedProx Synthetic(alpha, .)")
    synthetic_beta: float = Field(default=1.0, ge=0, description="FedProx Synthetic(., beta)")
    synthetic_devices: int = Field(default=30, ge=1)
    synthetic_max_samples: int = Field(
        default=10_000, ge=2, description="Cut on any Synthetic device's sample count."
    )
    synthetic_test_devices: int | None = Field(
        default=None,
        ge=1,
        description="Synthetic: the server's central test set holds the test shares of this "
        "many devices, spread evenly over the population (default: every device). Bounds the "
        "server's start-up and memory at large populations.",
    )
    test_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Held-out share for datasets without a test split."
    )
    cache_dir: Path | None = Field(
        default=None, description="Where generated datasets are cached (default ~/.cache/fedsys)."
    )
    public_fraction: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Share of the training set the server keeps as its public split (for "
        "compression) and no client sees; 0: none.",
    )
    public_path: Path | None = Field(
        default=None,
        description="An .npz file (arrays x, y) with the user's public split instead of a "
        "share of the training set.",
    )

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.name in ("mnist", "fashion_mnist", "cifar10") and self.path is None:
            raise ValueError(f"data.path is required for data.name={self.name!r}")
        if self.partitioner == "natural":
            if self.name != "synthetic":
                raise ValueError("data.partitioner='natural' exists only for data.name='synthetic'")
            if self.num_partitions != self.synthetic_devices:
                raise ValueError(
                    f"data.num_partitions ({self.num_partitions}) must equal "
                    f"data.synthetic_devices ({self.synthetic_devices}) "
                    "with the natural partitioner"
                )
        return self


ModelName = Literal["logreg", "mlp", "cnn1d", "cnn_mnist", "resnet_cifar"]


class ModelConfig(Section):
    """Architecture by registry name; input shape and classes come from the dataset."""

    name: ModelName = "cnn1d"
    hidden: list[int] = Field(default_factory=lambda: [200, 200], description="MLP widths.")
    channels: int = Field(default=32, ge=1, description="Width of the convolutional models.")


class TrainConfig(Section):
    """Rounds and the clients' local training."""

    rounds: int = Field(default=30, ge=1)
    local_epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=0.1, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    amp: bool = Field(default=False, description="Mixed precision (CUDA only).")
    stragglers: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Share of sampled clients per round that finish only part of their local "
        "work (FedProx's systems heterogeneity).",
    )
    max_steps: int | None = Field(
        default=None, ge=1, description="Cap on local optimizer steps per round."
    )
    eval_batch_size: int = Field(default=1024, ge=1)
    eval_overlap: bool = Field(
        default=True,
        description="Evaluate round r's model while round r+1's clients train (its metrics "
        "line and checkpoint follow at once); false: before round r+1 starts.",
    )
    timeout: float = Field(default=600.0, gt=0, description="Seconds to wait for replies.")


class DPConfig(Section):
    """Flower's server-side differential-privacy wrappers."""

    kind: Literal["fixed", "adaptive"] = "fixed"
    noise_multiplier: float = Field(default=1.0, ge=0)
    clipping_norm: float = Field(default=1.0, gt=0, description="Initial norm for 'adaptive'.")
    clipped_count_stddev: float | None = Field(
        default=None, gt=0, description="'adaptive' only; Flower's default is sampled/20."
    )


class StrategyConfig(Section):
    """Server strategy: one of Flower's own classes, with its parameters grouped here."""

    name: StrategyName = "fedavg"
    fraction_train: float = Field(default=1.0, gt=0, le=1)
    min_train_nodes: int = Field(default=2, ge=1)
    min_available_nodes: int = Field(default=2, ge=1)
    min_accepted: int = Field(
        default=1, ge=1, description="Fewer accepted updates: the round leaves the model as is."
    )
    proximal_mu: float = Field(default=0.0, ge=0, description="FedProx's mu.")
    drop_stragglers: bool | None = Field(
        default=None,
        description="Discard partial work of stragglers (default: true except for FedProx).",
    )
    server_lr: float = Field(default=0.1, gt=0, description="eta for FedAdam/FedYogi/FedAdagrad.")
    server_momentum: float = Field(default=0.9, ge=0, lt=1, description="FedAvgM's momentum.")
    beta_1: float = Field(default=0.9, ge=0, lt=1)
    beta_2: float = Field(default=0.99, ge=0, lt=1)
    tau: float = Field(default=1e-3, gt=0)
    trim_beta: float = Field(default=0.2, ge=0, lt=0.5, description="FedTrimmedAvg's beta.")
    num_malicious_nodes: int = Field(default=0, ge=0, description="Krum / MultiKrum / Bulyan.")
    num_nodes_to_select: int = Field(default=1, ge=1, description="MultiKrum.")
    dp: DPConfig | None = None

    @property
    def keeps_stragglers(self) -> bool:
        if self.drop_stragglers is not None:
            return not self.drop_stragglers
        return STRATEGY_TRAITS[self.name].keeps_stragglers


class CodecConfig(Section):
    """How updates travel: clip -> top-k -> quantize -> wire format -> (encrypt)."""

    quantize: Literal["none", QuantizeScheme] = "none"  # the widths: fedsys.codec.params
    topk: float | None = Field(default=None, gt=0, le=1, description="Share of entries kept.")
    encrypt: bool = Field(default=False, description="Seal updates to the aggregator's key.")
    cipher: Literal["aes-256-gcm", "chacha20-poly1305"] = "aes-256-gcm"
    clip_norm: float | None = Field(default=None, gt=0, description="Client-side L2 clipping.")
    block_size: int = Field(default=256, ge=8, multiple_of=2, description="Quantization block.")
    stochastic_rounding: bool = False
    error_feedback: bool = Field(
        default=True, description="Carry what top-k/quantization dropped to the next round."
    )
    max_update_bytes: int = Field(
        default=1 << 30, gt=0, description="Server: larger updates are rejected."
    )
    max_norm: float | None = Field(
        default=None, gt=0, description="Server: updates with a larger L2 norm are rejected."
    )
    downlink: DownlinkScheme = Field(
        default="none",
        description="How the global model travels to clients (int8: per-block scales, the "
        "server keeps the exact model).",
    )

    def pipeline_params(self) -> PipelineParams:
        """The codec's stage parameters: the one place the config maps onto the codec."""
        return PipelineParams(
            clip_norm=self.clip_norm,
            topk=self.topk,
            quantize=None if self.quantize == "none" else self.quantize,
            block_size=self.block_size,
            stochastic_rounding=self.stochastic_rounding,
        )


class SecAggConfig(Section):
    """Secure aggregation (SecAgg+, Bell et al. 2020): the server learns only the sum of the
    clients' quantized deltas, masked in the integers modulo 2^bits."""

    enabled: bool = False
    bits: Literal[16, 32, 64] = Field(
        default=32, description="Modulus 2^bits of the masked sum; each value costs bits/8 bytes."
    )
    quant_bits: int | None = Field(
        default=None,
        ge=2,
        le=32,
        description="Signed quantization width (values in +-(2^(q-1)-1)); default from "
        "codec.quantize: int8 -> 8, int4 -> 4, otherwise 16.",
    )
    clip_range: float | None = Field(
        default=None,
        gt=0,
        description="Each value is clamped to +-clip_range, the global quantization range; "
        "default codec.clip_norm (a clipped update never exceeds it).",
    )
    neighbours: int | None = Field(
        default=None, ge=1, description="Degree k of the neighbour graph; null: every client."
    )
    threshold: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Share of a client's neighbours needed to recover its secrets.",
    )
    timeout: float = Field(default=120.0, gt=0, description="Seconds per stage after training.")

    @staticmethod
    def wrap_error(num_clients: int, bits: int, quant_bits: int) -> str | None:
        """Why a sum of ``num_clients`` quantized values could wrap mod 2^bits, else None."""
        limit = (1 << (bits - 1)) - 1
        largest = (1 << (quant_bits - 1)) - 1
        worst = num_clients * largest
        if worst <= limit:
            return None
        fits = [
            q for q in range(quant_bits - 1, 1, -1) if num_clients * ((1 << (q - 1)) - 1) <= limit
        ]
        hint = f"lower secagg.quant_bits to {fits[0]} or " if fits else ""
        return (
            f"{num_clients} clients x largest quantized value {largest} (quantization width "
            f"{quant_bits}) = {worst} exceeds {limit}, the largest sum a {bits}-bit modulus "
            f"holds (secagg.bits={bits}); {hint}raise secagg.bits"
        )

    def resolved_quant_bits(self, codec: CodecConfig) -> int:
        if self.quant_bits is not None:
            return self.quant_bits
        return 16 if codec.quantize == "none" else QUANTIZE_BITS[codec.quantize]

    @model_validator(mode="after")
    def _check_widths(self) -> SecAggConfig:
        if self.quant_bits is not None and self.quant_bits > self.bits:
            raise ValueError(
                f"secagg.quant_bits ({self.quant_bits}) cannot exceed secagg.bits ({self.bits})"
            )
        return self


class RuntimeConfig(Section):
    """Where and how the run executes."""

    seed: int = 0
    client_cpus: float = Field(default=1.0, gt=0, description="Ray CPUs per virtual client.")
    client_gpus: float = Field(default=0.0, ge=0, description="Ray GPUs per virtual client.")
    torch_threads: int = Field(default=1, ge=1, description="Torch threads per client process.")
    reuse_freed_memory: bool = Field(
        default=True,
        description="Processes that train or aggregate keep freed model-sized blocks for "
        "reuse instead of page-faulting them back in every round (glibc only; see "
        "fedsys.memory). Shorthand for freed_memory keep (true) or system (false).",
    )
    freed_memory: FreedMemory | None = Field(
        default=None,
        description="What processes that train or aggregate do with freed blocks: keep "
        "(reuse them: fastest, the process keeps its peak heap), release (blocks from 1 MiB "
        "up go back to the OS at once: a worker holds what it uses, at the cost of page "
        "faults; for memory-bound language-model workers) or system (glibc's own). Default: "
        "from reuse_freed_memory.",
    )
    node_state_dir: Path | None = Field(
        default=None,
        description="Where nodes keep large state (error-feedback residuals); default "
        "<fedsys cache>/node-state, and in simulation /dev/shm/fedsys-node-state when every "
        "client's residual (two slots each) fits in a quarter of its free space.",
    )
    ray_address: str | None = Field(
        default=None,
        description="Run the simulation on this existing Ray cluster (e.g. 10.0.0.5:6379, or "
        "'auto'); default: RAY_ADDRESS if set, else a Ray instance started for the run.",
    )
    simulated_nodes: int | None = Field(
        default=None,
        ge=1,
        description="Flower nodes a simulation registers to play its clients; default: one "
        "per client up to 64, else max(64, 4 x the clients busy at once) (one per client with "
        "secure aggregation, a Ray cluster or the language-model task). See "
        "fedsys.server.node_pool.",
    )
    progress: bool = Field(default=True, description="Live rich table per round.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"

    @property
    def freed_memory_policy(self) -> FreedMemory:
        """``freed_memory``, else what ``reuse_freed_memory`` says."""
        if self.freed_memory is not None:
            return self.freed_memory
        return "keep" if self.reuse_freed_memory else "system"


class ExperimentConfig(Section):
    """One federated-learning experiment, end to end."""

    name: str = "quickstart"
    task: TaskName = Field(
        default="classification",
        description="classification (data/model sections) or language_model (the lm section).",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    codec: CodecConfig = Field(default_factory=CodecConfig)
    secagg: SecAggConfig = Field(default_factory=SecAggConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    compress: CompressConfig = Field(default_factory=CompressConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    population: PopulationConfig = Field(default_factory=PopulationConfig)
    fedbuff: FedBuffConfig = Field(
        default_factory=FedBuffConfig,
        description="Asynchronous buffered aggregation instead of rounds (fedbuff.enabled).",
    )
    federated_eval: FederatedEvalConfig = Field(default_factory=FederatedEvalConfig)
    lm: LMConfig = Field(default_factory=LMConfig)

    @model_validator(mode="after")
    def _cross_section(self) -> ExperimentConfig:
        """The rules across sections (``fedsys.config_rules``), in order; two fill defaults."""
        for rule in CROSS_SECTION_RULES:
            rule(self)
        return self

    def to_json(self) -> str:
        return self.model_dump_json()


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-typed value."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    key, raw = item.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict; the schema validates names and types afterwards."""
    for item in overrides:
        path, value = parse_override(item)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return raw


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        # cross-field checks run on the whole config and name their fields themselves
        lines.append(f"  {where}: {msg}" if where else f"  {msg}")
    return "invalid experiment config:\n" + "\n".join(lines)


def build_config(raw: dict[str, Any], overrides: list[str] | None = None) -> ExperimentConfig:
    """Validate a raw mapping (plus overrides) into an ExperimentConfig or raise ConfigError."""
    merged = apply_overrides(raw, list(overrides or []))
    try:
        return ExperimentConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None


def load_config(path: Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load YAML from ``path`` (None: built-in defaults) and apply dotted overrides."""
    raw: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return build_config(raw, overrides)


def dump_config(cfg: ExperimentConfig, path: Path) -> None:
    """Write the resolved config as YAML (used by --resume)."""
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
