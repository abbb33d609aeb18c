"""Asynchronous buffered aggregation (FedBuff): staleness weights, the buffer, the clock."""

from fedsys.fedbuff.buffer import BufferedUpdate, FedBuffBuffer
from fedsys.fedbuff.clock import InFlight, VirtualClock
from fedsys.fedbuff.staleness import staleness_weight

__all__ = ["BufferedUpdate", "FedBuffBuffer", "InFlight", "VirtualClock", "staleness_weight"]
