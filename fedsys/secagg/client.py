"""The client's side of one secure-aggregation round, as pure functions over its state.

Stages (Bell et al. 2020, SecAgg+; message flow as in Flower's ``SecAggPlusWorkflow``):

1. ``advertise``: fresh key pairs ``c`` (share channel) and ``s`` (masks), a self-mask seed
   ``b``; the public keys and a hash commitment to ``b`` go to the server.
2. ``share_keys``: ``b`` and the ``s`` private key are Shamir-shared t-of-k among the
   neighbours; each neighbour's pair of shares is sealed to it and relayed by the server.
3. ``mask``: the quantized update plus the self-mask plus one pairwise mask per neighbour that
   completed stage 2 (``+`` towards larger node ids, ``-`` towards smaller ones, so the pair
   cancels in the sum).
4. ``reveal``: for each neighbour the server names, the share of ``b`` (it sent its masked
   input) or of the ``s`` key (it did not), never both for the same neighbour.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field

import numpy as np

from fedsys.errors import SecAggError
from fedsys.secagg import shamir
from fedsys.secagg.graph import neighbours
from fedsys.secagg.keys import (
    Binding,
    new_private,
    open_share,
    pair_mask_key,
    public_of,
    seal_share,
    self_mask_key,
)
from fedsys.secagg.messages import Advert, ClientRoundState, RoundParams
from fedsys.secagg.prg import apply_masks

SHARE_PLAINTEXT = struct.Struct(f">QQ{shamir.SHARE_BYTES}s{shamir.SHARE_BYTES}s")
SEALED_BYTES = 12 + SHARE_PLAINTEXT.size + 16  # nonce + plaintext + tag


def commitment(binding: Binding, node: int, seed: bytes) -> bytes:
    """Binds a client to its self-mask seed, so the server can check a reconstruction."""
    return hashlib.sha256(binding.label(b"commit", node) + seed).digest()


def my_neighbours(state: ClientRoundState) -> frozenset[int]:
    p = state.params
    return neighbours(p.seed, p.nodes, p.degree)[state.node_id]


def advertise(params: RoundParams, node_id: int) -> tuple[ClientRoundState, Advert]:
    """Stage 1: this round's secrets (kept) and public keys (sent)."""
    if node_id not in params.nodes:
        raise SecAggError(f"node {node_id} is not among the round's nodes")
    c_sk, s_sk, b = new_private(), new_private(), os.urandom(32)
    state = ClientRoundState(
        params=params, node_id=node_id, c_sk=c_sk, s_sk=s_sk, b=b, stage="advertised"
    )
    advert = Advert(
        c_pk=public_of(c_sk),
        s_pk=public_of(s_sk),
        b_commit=commitment(params.binding, node_id, b),
    )
    return state, advert


def share_keys(
    state: ClientRoundState, peers: dict[int, Advert]
) -> tuple[ClientRoundState, dict[int, bytes]]:
    """Stage 2: seal one (b share, s-key share) pair to each neighbour that advertised."""
    if state.stage != "advertised":
        raise SecAggError(f"share-keys request in stage {state.stage!r}")
    mine = my_neighbours(state)
    strangers = set(peers) - mine
    if strangers:
        raise SecAggError(f"server sent keys of non-neighbours {sorted(strangers)[:3]}")
    p = state.params
    if len(peers) < p.t:
        raise SecAggError(f"only {len(peers)} neighbours advertised keys; {p.t} are needed")
    xs = {node: p.x_of(node) for node in peers}
    b_shares = shamir.split(state.b, p.t, list(xs.values()))
    s_shares = shamir.split(state.s_sk, p.t, list(xs.values()))
    sealed = {
        node: seal_share(
            p.binding,
            state.c_sk,
            state.node_id,
            node,
            advert.c_pk,
            SHARE_PLAINTEXT.pack(state.node_id, node, b_shares[x], s_shares[x]),
        )
        for node, advert in peers.items()
        for x in (xs[node],)
    }
    return state.model_copy(update={"peers": dict(peers), "stage": "shared"}), sealed


def mask(state: ClientRoundState, codes: np.ndarray, relayed: dict[int, bytes]) -> ClientRoundState:
    """Stage 3: mask ``codes`` in place with the self-mask and one mask per relaying neighbour.

    ``relayed`` holds the sealed shares of the neighbours that completed stage 2; it is kept
    (still sealed) for stage 4, and only those neighbours' pairwise masks are added.
    """
    if state.stage != "shared":
        raise SecAggError(f"masking request in stage {state.stage!r}")
    p = state.params
    if codes.shape != (p.length,) or codes.dtype.itemsize * 8 != p.bits:
        raise SecAggError(f"input has shape {codes.shape}, the round expects ({p.length},)")
    unknown = set(relayed) - set(state.peers)
    if unknown:
        raise SecAggError(f"relayed shares from nodes without keys {sorted(unknown)[:3]}")
    if len(relayed) < p.t:
        raise SecAggError(f"only {len(relayed)} neighbours completed key sharing; {p.t} needed")
    me = state.node_id
    masks = [(self_mask_key(p.binding, state.b, me), 1)]
    for peer in sorted(relayed):
        key = pair_mask_key(p.binding, state.s_sk, me, peer, state.peers[peer].s_pk)
        masks.append((key, 1 if me < peer else -1))
    apply_masks(codes, masks)
    return state.model_copy(update={"received": dict(relayed), "stage": "masked"})


@dataclass
class Reveal:
    """Stage 4 reply: shares of survivors' ``b`` and dropped nodes' ``s`` keys."""

    b_shares: dict[int, bytes] = field(default_factory=dict)
    sk_shares: dict[int, bytes] = field(default_factory=dict)
    problems: dict[int, str] = field(default_factory=dict)


def reveal(
    state: ClientRoundState, survivors: list[int], dropped: list[int]
) -> tuple[ClientRoundState, Reveal]:
    """Stage 4: open the shares the named neighbours sent and reveal one secret of each.

    Answered once per round: a second request could ask for the other secret of a node.
    """
    if state.stage != "masked":
        raise SecAggError(f"unmasking request in stage {state.stage!r}")
    both = set(survivors) & set(dropped)
    if both:
        raise SecAggError(f"server asked for both secrets of nodes {sorted(both)[:3]}")
    p = state.params
    out = Reveal()
    for node, want_b in [(n, True) for n in survivors] + [(n, False) for n in dropped]:
        if node == state.node_id:
            continue
        sealed = state.received.get(node)
        if sealed is None:
            out.problems[node] = "no share received from this node"
            continue
        try:
            plain = open_share(
                p.binding, state.c_sk, node, state.node_id, state.peers[node].c_pk, sealed
            )
            if len(plain) != SHARE_PLAINTEXT.size:
                raise SecAggError(f"share from node {node} has {len(plain)} bytes")
            src, dst, b_share, s_share = SHARE_PLAINTEXT.unpack(plain)
            if (src, dst) != (node, state.node_id):
                raise SecAggError(f"share from node {node} names {src} -> {dst}")
        except SecAggError as exc:
            out.problems[node] = exc.reason
            continue
        if want_b:
            out.b_shares[node] = b_share
        else:
            out.sk_shares[node] = s_share
    return state.model_copy(update={"stage": "revealed", "received": {}}), out
