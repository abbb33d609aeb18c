"""The node config a ClientApp reads: one parser for simulated and deployed nodes."""

from __future__ import annotations

import pytest

from fedsys.client.node_config import CLIENT_ID, DATA_PATH, PARTITION_ID, NodeConfig
from fedsys.errors import ConfigError


def test_simulated_and_deployed_nodes_read_the_same_keys() -> None:
    sim = NodeConfig.parse({PARTITION_ID: 3, "num-partitions": 10})
    assert (sim.partition_id, sim.client_id, sim.deployed) == (3, None, False)
    deployed = NodeConfig.parse({CLIENT_ID: "edge-1", DATA_PATH: "", "other-key": 1.5})
    assert (deployed.client_id, deployed.data_path, deployed.deployed) == ("edge-1", None, True)
    assert NodeConfig.parse({CLIENT_ID: 7}).client_id == "7"


def test_a_bad_value_names_its_key() -> None:
    with pytest.raises(ConfigError, match="partition-id"):
        NodeConfig.parse({PARTITION_ID: "first"})
