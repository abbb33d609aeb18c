"""The simulated client population: stable keys, speeds, availability, sampling."""

from fedsys.population.availability import Availability, dropped_out
from fedsys.population.sampling import sample_keys
from fedsys.population.speed import slowdown, slowdowns

__all__ = ["Availability", "dropped_out", "sample_keys", "slowdown", "slowdowns"]
