"""Fixed-scale quantization into the integers mod 2^b, so that a sum of updates decodes.

Per-block absmax scales (the codec's int8/int4) differ per client, and a sum of integers with
different scales means nothing. Under secure aggregation every client uses one global scale,
``clip_range / qmax`` with ``qmax = 2^(quant_bits-1) - 1``: a value is clamped to
``[-clip_range, clip_range]``, divided by the scale and rounded (stochastically when asked, which
is unbiased), then stored in two's complement mod 2^bits. The sum of n such integers is exact as
long as ``n * qmax <= 2^(bits-1) - 1``; the config refuses settings where it might wrap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsys.config import SecAggConfig
from fedsys.errors import ConfigError
from fedsys.secagg.prg import UINT_DTYPES

SIGNED = {16: np.int16, 32: np.int32, 64: np.int64}


def wrap_error(num_clients: int, bits: int, quant_bits: int) -> str | None:
    """Why ``num_clients`` sums of ``quant_bits`` values could wrap mod 2^bits, or None."""
    return SecAggConfig.wrap_error(num_clients, bits, quant_bits)


@dataclass(frozen=True)
class FixedPoint:
    """One round's integer domain: modulus bits, quantization bits and the clamp range."""

    bits: int
    quant_bits: int
    clip_range: float

    def __post_init__(self) -> None:
        if self.bits not in UINT_DTYPES:
            raise ConfigError(f"secagg.bits must be one of {sorted(UINT_DTYPES)}, got {self.bits}")
        if not 2 <= self.quant_bits <= self.bits:
            raise ConfigError(
                f"secagg.quant_bits ({self.quant_bits}) must be between 2 and bits ({self.bits})"
            )
        if not self.clip_range > 0:
            raise ConfigError(f"secagg clip range must be positive, got {self.clip_range}")

    @property
    def qmax(self) -> int:
        return int(2 ** (self.quant_bits - 1) - 1)

    @property
    def scale(self) -> float:
        return self.clip_range / self.qmax

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger]:
        return np.dtype(UINT_DTYPES[self.bits])

    def check_clients(self, num_clients: int) -> None:
        """ConfigError naming the numbers if ``num_clients`` inputs could wrap around."""
        reason = wrap_error(num_clients, self.bits, self.quant_bits)
        if reason is not None:
            raise ConfigError(reason)

    def encode(self, values: np.ndarray, *, rng: np.random.Generator | None = None) -> np.ndarray:
        """Float vector -> unsigned integers mod 2^bits (``rng``: stochastic rounding).

        Returns the codes and never keeps a reference to ``values``.
        """
        work = np.dtype(np.float64 if self.quant_bits > 24 else np.float32)  # exact integers
        scaled: np.ndarray = np.array(values, dtype=work, copy=True).reshape(-1)
        np.clip(scaled, -self.clip_range, self.clip_range, out=scaled)
        np.multiply(scaled, 1.0 / self.scale, out=scaled, casting="same_kind")
        if rng is not None:
            np.add(scaled, rng.random(scaled.shape[0], dtype=work.type), out=scaled)  # type: ignore[arg-type]
            np.floor(scaled, out=scaled)
        else:
            np.rint(scaled, out=scaled)
        np.clip(scaled, -self.qmax, self.qmax, out=scaled)
        return scaled.astype(SIGNED[self.bits]).view(self.dtype)

    def decode(self, codes: np.ndarray, divisor: float = 1.0) -> np.ndarray:
        """Unsigned integers (a single code vector or a sum) -> float32 values / ``divisor``."""
        signed = codes.view(SIGNED[self.bits])
        out: np.ndarray = signed.astype(np.float64 if self.bits == 64 else np.float32)
        np.multiply(out, self.scale / divisor, out=out, casting="same_kind")
        return out.astype(np.float32, copy=False)
