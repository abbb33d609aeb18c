"""The round's sparse neighbour graph (SecAgg+, Bell et al. 2020, section 3).

Each client masks with, and hands its secret shares to, only its neighbours, so per-client
cost grows with the degree k instead of the number of clients. The graph is a Harary graph
H(k, n) over a random permutation of the round's nodes: node at position i is linked to the
k/2 positions on either side (mod n). The permutation comes from a public per-round seed, so
the server and every client compute the same graph from (seed, sorted node ids, k).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def effective_degree(num_nodes: int, degree: int | None) -> int:
    """Degree actually used: all other nodes when ``degree`` is None or >= n - 1; else even."""
    if num_nodes < 2:
        return 0
    if degree is None or degree >= num_nodes - 1:
        return num_nodes - 1
    half = max(1, (degree + 1) // 2)  # odd degrees round up: the Harary construction is symmetric
    return min(num_nodes - 1, 2 * half)


def _permutation(seed: bytes, nodes: Sequence[int]) -> list[int]:
    digest = hashlib.sha256(b"fedsys-secagg-graph" + seed).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "big"))
    order = rng.permutation(len(nodes))
    return [nodes[int(i)] for i in order]


def neighbours(seed: bytes, nodes: Sequence[int], degree: int | None) -> dict[int, frozenset[int]]:
    """Every node's neighbour set; symmetric, no self-loops, every node of the same degree."""
    ordered = sorted(set(nodes))
    n = len(ordered)
    k = effective_degree(n, degree)
    if k >= n - 1:
        everyone = frozenset(ordered)
        return {node: everyone - {node} for node in ordered}
    perm = _permutation(seed, ordered)
    half = k // 2
    graph: dict[int, frozenset[int]] = {}
    for i, node in enumerate(perm):
        graph[node] = frozenset(perm[(i + d) % n] for d in range(-half, half + 1) if d != 0)
    return graph
