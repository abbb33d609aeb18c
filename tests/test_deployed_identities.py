"""Deployed nodes are learned without asking every node: the roster ``fedsys server`` writes
as it registers node keys labels them before any message, each node introduces itself with
its first reply, and a node is held to one client id for the run."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import Message, MessageType
from intro_support import ListedNodes
from intro_support import introduction_reply as _reply
from safetensors.numpy import load_file

from fedsys.config import build_config
from fedsys.crypto.keys import public_to_raw
from fedsys.deploy.pki import generate_node_auth_key
from fedsys.deploy.server_daemon import DeployError, register_nodes
from fedsys.inprocess import InProcessGrid, run_in_process
from fedsys.node_roster import (
    NodeRoster,
    RosterError,
    client_id_of_node_key,
    load_roster,
    record_node,
)
from fedsys.protocol import CLIENT_KEY, HELLO_KEY, INTRO_RECORD
from fedsys.server.deployed_identities import REFUSED_INTRODUCTION, DeployedClients
from fedsys.server.grid_view import DeployedGrid
from fedsys.server.records import read_rounds


def _sampled_clients(node_ids: list[int], roster: dict[int, str], seed: int) -> list[str]:
    clients = DeployedClients(roster=roster)
    grid = DeployedGrid(ListedNodes(node_ids), clients.key_of_node, clients.see)  # type: ignore[arg-type]
    random.seed(seed)  # what Flower's sampler draws from
    return [clients.client_ids[n] for n in random.sample(list(grid.get_node_ids()), 3)]


def test_roster_makes_sampling_independent_of_node_ids_and_connection_order() -> None:
    draw = random.Random(1)
    names = [f"edge-{i}" for i in range(8)]
    ids_a = [draw.getrandbits(64) for _ in names]  # Flower's node ids: random unsigned 64-bit
    ids_b = [draw.getrandbits(64) for _ in names]
    roster_a = dict(zip(ids_a, names, strict=True))
    roster_b = dict(zip(ids_b, names, strict=True))
    shuffled = draw.sample(ids_b, 8)
    assert _sampled_clients(ids_a, roster_a, 7) == _sampled_clients(shuffled, roster_b, 7)


def test_keys_follow_the_roster_then_first_listing() -> None:
    clients = DeployedClients(roster={900: "b", 5: "a"})
    assert clients.key_of_node == {5: 0, 900: 1}  # by client id, not node id
    grid = DeployedGrid(ListedNodes([77, 900, 3, 5]), clients.key_of_node, clients.see)  # type: ignore[arg-type]
    assert list(grid.get_node_ids()) == [5, 900, 3, 77]  # unnamed nodes: next keys, by id
    assert clients.node_for(2) == 3 and clients.node_for(3) == 77
    grid.visible = {77, 5}
    assert list(grid.get_node_ids()) == [5, 77]
    with pytest.raises(KeyError):
        clients.node_for(9)


def test_first_introduction_binds_a_node_and_nothing_rebinds_it(task_identity: None) -> None:
    clients = DeployedClients()
    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    clients.learn(_reply(1, "a", first, examples=30))
    assert clients.client_ids == {1: "a"} and clients.declared_examples == {1: 30}
    # a later introduction of the same node changes nothing (no new key, no larger weight)
    clients.learn(_reply(1, "z", second, examples=999))
    assert clients.client_ids == {1: "a"} and clients.declared_examples == {1: 30}
    assert public_to_raw(clients.allow_list["a"]) == public_to_raw(first.public_key())
    # another node claiming "a" is pinned to a name no envelope verifies under
    clients.learn(_reply(2, "a", second))
    assert clients.client_ids[2] == REFUSED_INTRODUCTION
    assert public_to_raw(clients.allow_list["a"]) == public_to_raw(first.public_key())
    assert 2 not in clients.declared_examples


def test_roster_and_allow_list_decide_which_claims_bind(task_identity: None) -> None:
    files = {"a": Ed25519PrivateKey.generate().public_key()}
    clients = DeployedClients(roster={10: "a"}, files_allow_list=files)
    key = Ed25519PrivateKey.generate()
    clients.learn(_reply(10, "b", key))  # registered as "a", claims "b": stays "a"
    assert clients.client_ids[10] == "a"
    clients.learn(_reply(11, "mallory", key))  # not on the allow-list from files
    assert clients.client_ids[11] == REFUSED_INTRODUCTION
    clients.learn(_reply(12, "a", key))  # the roster's node holds "a"
    assert clients.client_ids[12] == REFUSED_INTRODUCTION
    assert set(clients.allow_list) == {"a"}  # files only: nothing trusted on first use


def test_unreadable_or_missing_introductions_bind_nothing(task_identity: None) -> None:
    clients = DeployedClients()
    bad = _reply(4, "a", Ed25519PrivateKey.generate())
    bad.content.config_records[INTRO_RECORD][HELLO_KEY] = '{"client_id": 5}'
    clients.learn(bad)
    plain = _reply(5, "a", Ed25519PrivateKey.generate())
    del plain.content[INTRO_RECORD]
    clients.learn(plain)
    assert clients.client_ids == {} and clients.allow_list == {}


def test_roster_file_round_trip_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "state" / "roster.json"
    assert load_roster(path) == NodeRoster()
    record_node(path, "a", 2**64 - 5)  # Flower's node ids are unsigned 64-bit
    record_node(path, "b", 7)
    record_node(path, "a", 9)  # registered again (a new SuperLink database)
    assert load_roster(path).by_node() == {9: "a", 7: "b"}
    assert NodeRoster(nodes={"a": 1, "b": 1, "c": 2}).by_node() == {2: "c"}  # ambiguous: none
    path.write_text('{"nodes": {"a": "x"}}')
    with pytest.raises(RosterError, match="roster"):
        load_roster(path)


def test_client_id_of_node_key_from_comment_or_layout(tmp_path: Path) -> None:
    commented = tmp_path / "k.pub"
    commented.write_bytes(generate_node_auth_key(comment="fedsys-edge-7").public_openssh)
    assert client_id_of_node_key(commented) == "edge-7"
    laid_out = tmp_path / "keys" / "clients" / "edge-8" / "node_auth.pub"
    laid_out.parent.mkdir(parents=True)
    laid_out.write_bytes(generate_node_auth_key().public_openssh)
    assert client_id_of_node_key(laid_out) == "edge-8"
    other = tmp_path / "other.pub"
    other.write_bytes(generate_node_auth_key(comment="fedsys-../../x").public_openssh)
    assert client_id_of_node_key(other) is None
    assert client_id_of_node_key(tmp_path / "missing.pub") is None


def test_registration_writes_the_roster(tmp_path: Path) -> None:
    keys = []
    for cid in ("a", "b"):
        key = tmp_path / f"{cid}.pub"
        key.write_bytes(generate_node_auth_key(comment=f"fedsys-{cid}").public_openssh)
        keys.append(key)
    answers = {str(keys[0]): {"node-id": "123"}}

    def cli(*args: str, timeout: float = 0.0) -> dict[str, object]:
        if args[2] in answers:
            return answers[args[2]]
        raise DeployError("Public key already in use")

    roster = tmp_path / "roster.json"
    register_nodes(cli, keys, roster)  # type: ignore[arg-type]
    assert load_roster(roster).by_node() == {123: "a"}  # "b" was registered before


_RUN = [
    "data.num_partitions=6",
    "strategy.fraction_train=0.5",
    "strategy.min_train_nodes=3",
    "strategy.min_available_nodes=6",
    "model.channels=4",
    "train.rounds=2",
    "train.batch_size=64",
    "train.max_steps=2",
    "publish.mode=never",
    "runtime.progress=false",
    "runtime.seed=3",
    "codec.encrypt=true",
    "defense.direction_check=false",
    "federated_eval.evaluate_every=1",
    "federated_eval.fraction_evaluate=0.5",
]


def test_deployed_run_asks_no_node_and_ignores_node_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deployed path (no simulation) over in-process nodes: no start-up query, every
    honest update accepted with encryption on, federated evaluation on the nodes' own data,
    and with a roster the same model whatever node ids the nodes got."""
    kinds: list[str] = []
    named: list[int] = []  # messages that told a node which client to play
    push = InProcessGrid.push_messages

    def recording(self: InProcessGrid, messages: list[Message]) -> list[str]:
        messages = list(messages)
        kinds.extend(m.metadata.message_type for m in messages)
        named.extend(
            1 for m in messages if CLIENT_KEY in m.content.config_records.get("config", {})
        )
        return list(push(self, messages))

    monkeypatch.setattr(InProcessGrid, "push_messages", recording)
    rng = np.random.default_rng(2)
    models = []
    for run in ("a", "b"):
        ids = [int(x) for x in rng.choice(2**40, 6, replace=False)]
        out = tmp_path / run
        state = f"runtime.node_state_dir={tmp_path / (run + '-state')}"
        cfg = build_config({}, [*_RUN, state])
        roster = {node: f"sim-{i}" for i, node in enumerate(ids)}
        run_in_process(cfg, out, node_ids=ids, roster=roster)
        rounds = read_rounds(out / "metrics.jsonl")
        assert all(r.rejected == [] and r.clients == r.sampled == 3 for r in rounds)
        assert all(r.federated_clients == 3 for r in rounds)
        models.append(load_file(out / "model.safetensors"))
    # no query, so no node was asked who it is; deployed nodes name themselves
    assert set(kinds) == {MessageType.TRAIN, MessageType.EVALUATE}
    assert named == []
    for name in models[0]:
        np.testing.assert_array_equal(models[0][name], models[1][name])
