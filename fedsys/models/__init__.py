"""Classifiers built by name from the model config and the dataset's shape."""

from fedsys.models.params import count_parameters
from fedsys.models.registry import build_model

__all__ = ["build_model", "count_parameters"]
