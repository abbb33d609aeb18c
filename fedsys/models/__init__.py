"""Classifiers built by name from the model config and the dataset's shape."""

from fedsys.models.catalog import build_model
from fedsys.models.params import count_parameters

__all__ = ["build_model", "count_parameters"]
