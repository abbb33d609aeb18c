"""The global model on its way to the clients: the fp32 record, or a coded copy.

With ``codec.downlink`` set the coded model travels in the round's train config (under
``GLOBAL_KEY``) and the fp32 record does not travel at all. Strategies that keep the global
model as their reference (``keeps_reference`` in ``fedsys.strategy_traits``) must still get
the exact model in ``configure_train``; Flower puts what that method receives into every
message, so those arrays are taken out of the messages again here, in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from flwr.app import Array, ArrayRecord, ConfigRecord, Message

from fedsys.codec.downlink import DownlinkScheme, encode_global
from fedsys.config import ExperimentConfig
from fedsys.crypto import public_to_raw
from fedsys.protocol import AGGREGATOR_KEY, CONFIG_KEY, GLOBAL_KEY, SEED_KEY


@dataclass(frozen=True)
class DownlinkModel:
    """This round's global model: what the strategy is given and what the clients get."""

    for_strategy: ArrayRecord  # configure_train's ``arrays``: empty when not needed
    coded: bytes | None  # the coded model, or None when the fp32 record travels

    @property
    def nbytes(self) -> int:
        """Bytes of model each train message carries."""
        return len(self.coded) if self.coded is not None else self.for_strategy.count_bytes()

    def add_to(self, config: ConfigRecord) -> None:
        """Put the coded model into the train config every message will carry."""
        if self.coded is not None:
            config[GLOBAL_KEY] = self.coded

    def keep_off(self, messages: list[Message]) -> None:
        """With a coded model, the fp32 record handed to the strategy stays on the server."""
        if self.coded is None:
            return
        for msg in messages:
            content = msg.content
            for key, array_record in list(content.array_records.items()):
                if array_record is self.for_strategy:
                    content[key] = ArrayRecord()


def downlink_model(
    model: Mapping[str, np.ndarray],
    scheme: DownlinkScheme,
    block_size: int,
    *,
    keeps_reference: bool,
) -> DownlinkModel:
    """The round's downlink for the global ``model``.

    With a coded downlink the fp32 record is only built (40 MB of serialization at 10M
    parameters) for strategies that keep it as their reference.
    """
    if scheme == "none":
        return DownlinkModel(ArrayRecord({k: Array(v) for k, v in model.items()}), None)
    arrays = (
        ArrayRecord({k: Array(v) for k, v in model.items()}) if keeps_reference else ArrayRecord()
    )
    return DownlinkModel(arrays, encode_global(model, scheme, block_size))


def train_config(
    cfg: ExperimentConfig, exchange_key: X25519PrivateKey | None, down: DownlinkModel
) -> ConfigRecord:
    """The config every train message carries: the experiment, the seed, the aggregator's
    public key (``codec.encrypt``) and the coded global model (``codec.downlink``)."""
    config = ConfigRecord({CONFIG_KEY: cfg.to_json(), SEED_KEY: cfg.runtime.seed})
    if exchange_key is not None:
        config[AGGREGATOR_KEY] = public_to_raw(exchange_key.public_key())
    down.add_to(config)
    return config
