"""Secure aggregation (SecAgg+, Bell et al. 2020) of quantized updates in the integers mod 2^b.

Pure protocol code, independent of Flower: ``client`` and ``server`` hold the four stages,
``graph`` the sparse neighbour graph, ``keys`` X25519/HKDF/AEAD, ``shamir`` the secret sharing,
``prg`` the ChaCha20 masks, ``fixedpoint`` the global-scale quantization, ``layout`` the model
as one flat vector. The Flower glue lives in ``fedsys.client.secagg_handler`` and
``fedsys.server.secagg_round``.
"""

from fedsys.secagg.fixedpoint import FixedPoint, wrap_error
from fedsys.secagg.layout import FlatLayout
from fedsys.secagg.messages import Advert, ClientRoundState, RoundParams
from fedsys.secagg.server import SecAggServer

__all__ = [
    "Advert",
    "ClientRoundState",
    "FixedPoint",
    "FlatLayout",
    "RoundParams",
    "SecAggServer",
    "wrap_error",
]
