"""The server's side of one secure-aggregation round: relay, sum, reconstruct, unmask.

The server learns public keys, sealed shares it cannot open, masked vectors (uniformly random
on their own) and, at the end, the self-mask seeds of the clients whose inputs it sums and the
mask keys of those whose inputs it does not: from these it recovers exactly the sum mod 2^b.
Every ``add_*`` method validates its input and raises :class:`SecAggMessageInvalid` naming the
node, which the caller records as an exclusion; nothing a client sends can crash the server.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping

import numpy as np

from fedsys.errors import SecAggAborted, SecAggError, SecAggMessageInvalid
from fedsys.secagg import shamir
from fedsys.secagg.client import SEALED_BYTES, commitment
from fedsys.secagg.graph import neighbours
from fedsys.secagg.keys import pair_mask_key, public_of, self_mask_key
from fedsys.secagg.messages import Advert, RoundParams
from fedsys.secagg.prg import UINT_DTYPES, apply_masks

MIN_INPUTS = 2  # a "sum" of one input would be that client's update
MAX_SUBSETS = 32  # share subsets tried when a reconstruction fails its commitment check


class SecAggServer:
    """State of one round on the server; stages must be driven in order."""

    def __init__(self, params: RoundParams) -> None:
        self.params = params
        self.graph = neighbours(params.seed, params.nodes, params.degree)
        self.adverts: dict[int, Advert] = {}
        self.sealed: dict[int, dict[int, bytes]] = {}  # U1: src -> dst -> sealed share
        self.masked: set[int] = set()  # U2
        self.revealed: dict[int, tuple[dict[int, bytes], dict[int, bytes]]] = {}  # U3
        self.excluded: dict[int, str] = {}
        self.share_problems: list[tuple[int, str]] = []
        self.total = np.zeros(params.length, dtype=UINT_DTYPES[params.bits])
        self._unmask: dict[int, tuple[list[int], list[int]]] | None = None

    # -- stage 1 -------------------------------------------------------------------------
    def add_advert(self, node: int, advert: Advert) -> None:
        self._expect_member(node)
        if not isinstance(advert, Advert):
            raise SecAggMessageInvalid(node, f"key advertisement is a {type(advert).__name__}")
        if node in self.adverts:
            raise SecAggMessageInvalid(node, "second key advertisement this round")
        if len({advert.c_pk, advert.s_pk}) != 2:
            raise SecAggMessageInvalid(node, "channel and mask keys must differ")
        self.adverts[node] = advert

    def share_requests(self) -> dict[int, dict[int, Advert]]:
        """For each advertised node, its neighbours' public keys (only those who advertised)."""
        return {
            node: {peer: self.adverts[peer] for peer in self.graph[node] if peer in self.adverts}
            for node in self.adverts
        }

    # -- stage 2 -------------------------------------------------------------------------
    def add_shares(self, node: int, sealed: Mapping[int, bytes]) -> None:
        if node not in self.adverts:
            raise SecAggMessageInvalid(node, "shares from a node that advertised no keys")
        if node in self.sealed:
            raise SecAggMessageInvalid(node, "second set of shares this round")
        if not isinstance(sealed, Mapping):
            raise SecAggMessageInvalid(node, f"shares are a {type(sealed).__name__}, not a map")
        expected = {peer for peer in self.graph[node] if peer in self.adverts}
        if set(sealed) != expected:
            missing, extra = sorted(expected - set(sealed)), sorted(set(sealed) - expected)
            raise SecAggMessageInvalid(
                node, f"shares for the wrong nodes (missing {missing[:3]}, extra {extra[:3]})"
            )
        for dst, blob in sealed.items():
            if not isinstance(blob, bytes) or len(blob) != SEALED_BYTES:
                size = len(blob) if isinstance(blob, bytes) else type(blob).__name__
                raise SecAggMessageInvalid(
                    node, f"malformed share for node {dst}: {size} bytes, expected {SEALED_BYTES}"
                )
        self.sealed[node] = dict(sealed)

    def relay_requests(self) -> dict[int, dict[int, bytes]]:
        """For each node of U1, the sealed shares its U1 neighbours sent it."""
        return {
            node: {src: self.sealed[src][node] for src in self.graph[node] if src in self.sealed}
            for node in self.sealed
        }

    # -- stage 3 -------------------------------------------------------------------------
    def add_masked(self, node: int, vector: object) -> None:
        """Add one masked input into the running sum (O(model) memory, any arrival order)."""
        if node not in self.sealed:
            raise SecAggMessageInvalid(node, "masked input from a node outside key sharing")
        if node in self.masked:
            raise SecAggMessageInvalid(node, "second masked input this round")
        if self._unmask is not None:
            raise SecAggMessageInvalid(node, "masked input after unmasking began")
        dtype = self.total.dtype
        expected = self.params.length * dtype.itemsize
        if isinstance(vector, np.ndarray):
            if vector.dtype != dtype or vector.shape != self.total.shape:
                raise SecAggMessageInvalid(
                    node,
                    f"masked input is {vector.dtype}{vector.shape}, expected "
                    f"{dtype}({self.params.length},)",
                )
            values = vector
        elif isinstance(vector, bytes | bytearray | memoryview):
            if len(vector) != expected:
                raise SecAggMessageInvalid(
                    node,
                    f"masked input has {len(vector)} bytes, expected {expected} "
                    f"({self.params.length} values of {self.params.bits} bits)",
                )
            values = np.frombuffer(vector, dtype=dtype.newbyteorder("<"))
        else:
            raise SecAggMessageInvalid(node, f"masked input is a {type(vector).__name__}")
        np.add(self.total, values, out=self.total)
        self.masked.add(node)

    def unmask_requests(self) -> dict[int, tuple[list[int], list[int]]]:
        """For each node of U2: (its U2 neighbours, its neighbours in U1 but not U2)."""
        needed = max(self.params.t, MIN_INPUTS)
        if len(self.masked) < needed:
            raise SecAggAborted(
                f"{len(self.masked)} masked inputs arrived; at least {needed} (the share "
                f"threshold, and never fewer than {MIN_INPUTS}) are needed to unmask"
            )
        if self._unmask is None:  # fixed once asked: U2 no longer changes
            dropped = set(self.sealed) - self.masked
            self._unmask = {
                node: (
                    sorted(p for p in self.graph[node] if p in self.masked),
                    sorted(p for p in self.graph[node] if p in dropped),
                )
                for node in sorted(self.masked)
            }
        return self._unmask

    # -- stage 4 -------------------------------------------------------------------------
    def add_reveal(
        self,
        node: int,
        b_shares: Mapping[int, bytes],
        sk_shares: Mapping[int, bytes],
        problems: Mapping[int, str] | None = None,
    ) -> None:
        if node not in self.masked:
            raise SecAggMessageInvalid(node, "shares revealed by a node outside the sum")
        if node in self.revealed:
            raise SecAggMessageInvalid(node, "second reveal this round")
        survivors, dropped = self.unmask_requests()[node]
        if not isinstance(b_shares, Mapping) or not isinstance(sk_shares, Mapping):
            raise SecAggMessageInvalid(node, "revealed shares are not maps of node to share")
        if not set(b_shares) <= set(survivors) or not set(sk_shares) <= set(dropped):
            raise SecAggMessageInvalid(node, "revealed shares of nodes it was not asked about")
        for owner, share in itertools.chain(b_shares.items(), sk_shares.items()):
            if not isinstance(share, bytes) or len(share) != shamir.SHARE_BYTES:
                raise SecAggMessageInvalid(node, f"malformed share of node {owner}")
        for owner, reason in dict(problems or {}).items():
            self.share_problems.append((owner, f"node {node} could not use its share: {reason}"))
        self.revealed[node] = (dict(b_shares), dict(sk_shares))

    def finish(self) -> np.ndarray:
        """The exact sum (mod 2^bits) of the inputs of U2; SecAggAborted if it cannot be had."""
        p = self.params
        dropped = set(self.sealed) - self.masked
        masks: list[tuple[bytes, int]] = []
        for owner in sorted(self.masked):
            seed = self._reconstruct(owner, 0)
            masks.append((self_mask_key(p.binding, seed, owner), -1))
        for owner in sorted(dropped):
            s_sk = self._reconstruct(owner, 1)
            for peer in sorted(self.graph[owner] & self.masked):
                key = pair_mask_key(p.binding, s_sk, owner, peer, self.adverts[peer].s_pk)
                # ``peer`` added +mask towards a larger id and -mask towards a smaller one.
                masks.append((key, -1 if peer < owner else 1))
        apply_masks(self.total, masks)
        return self.total

    def _valid(self, owner: int, which: int, secret: bytes) -> bool:
        """Does a reconstructed secret match what ``owner`` committed to in stage 1?"""
        advert = self.adverts[owner]
        if which == 0:
            return commitment(self.params.binding, owner, secret) == advert.b_commit
        return public_of(secret) == advert.s_pk

    def _reconstruct(self, owner: int, which: int) -> bytes:
        """Combine ``owner``'s secret (0: b, 1: s key) from the revealed shares and check it."""
        p = self.params
        shares = {
            p.x_of(holder): revealed[which][owner]
            for holder, revealed in sorted(self.revealed.items())
            if owner in revealed[which]
        }
        what = "self-mask seed" if which == 0 else "mask key"
        if len(shares) < p.t:
            reports = [why for who, why in self.share_problems if who == owner]
            raise SecAggAborted(
                f"cannot recover the {what} of node {owner}: {len(shares)} shares "
                f"arrived, {p.t} needed"
                + (f" ({len(reports)} neighbours report: {reports[0]})" if reports else ""),
                culprit=owner if reports else None,
            )
        for subset in _subsets(sorted(shares), p.t, owner):
            try:
                secret = shamir.combine({x: shares[x] for x in subset})
                if self._valid(owner, which, secret):
                    return secret
            except (SecAggError, ValueError):
                continue
        raise SecAggAborted(
            f"the {what} of node {owner} does not match its commitment from any "
            f"{p.t} of its {len(shares)} shares"
        )

    def _expect_member(self, node: int) -> None:
        if node not in self.graph:
            raise SecAggMessageInvalid(node, "not one of this round's nodes")


def _subsets(xs: list[int], t: int, salt: int) -> Iterator[tuple[int, ...]]:
    """The first ``t`` points, then random ``t``-subsets (bad shares are rare, and costly)."""
    yield tuple(xs[:t])
    if len(xs) == t:
        return
    rng = random.Random(salt)
    for _ in range(MAX_SUBSETS - 1):
        yield tuple(sorted(rng.sample(xs, t)))
