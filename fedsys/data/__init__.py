"""Datasets as in-memory arrays, and their deterministic split across clients."""

from fedsys.data.catalog import (
    clear_memo,
    client_partition,
    client_test_partition,
    dataset_info,
    load_dataset,
    load_public,
    load_test,
    partition_indices,
)
from fedsys.data.partition import dirichlet, iid, natural, shards
from fedsys.data.types import ArrayDataset, DatasetInfo

__all__ = [
    "ArrayDataset",
    "DatasetInfo",
    "clear_memo",
    "client_partition",
    "client_test_partition",
    "dataset_info",
    "dirichlet",
    "iid",
    "load_dataset",
    "load_public",
    "load_test",
    "natural",
    "partition_indices",
    "shards",
]
