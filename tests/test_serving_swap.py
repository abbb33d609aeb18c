"""Hot swaps under concurrent load: every request succeeds and is answered entirely by the
version it reports, while new versions are published over HTTP."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import numpy as np
from serving_support import (
    NAME,
    TOKEN,
    artifact,
    files,
    make_registry,
    npy,
    reference_predictions,
    samples,
    settings,
)

from fedsys.serving.endpoint import create_app

VERSIONS = (2, 3, 4)


def test_hot_swap_under_load_fails_no_request(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    key = make_registry(root, seeds=(1,))
    parts = {v: files(artifact(key, v, v, tmp_path / "scratch")) for v in VERSIONS}
    x = samples(3)
    expected = {v: reference_predictions(v, x).tolist() for v in (1, *VERSIONS)}
    os.environ["FEDSYS_PUBLISH_TOKEN"] = TOKEN
    try:
        app = create_app(settings(root, poll_interval_s=60.0, max_batch_size=8))
    finally:
        del os.environ["FEDSYS_PUBLISH_TOKEN"]

    async def main() -> tuple[list[tuple[int, int, list[int]]], list[list[int]]]:
        done = asyncio.Event()
        answers: list[tuple[int, int, list[int]]] = []
        per_client: list[list[int]] = []
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

                async def load() -> None:
                    seen: list[int] = []
                    while True:
                        # The last request starts after the final swap: it must see it.
                        last = done.is_set() and len(seen) >= 20
                        resp = await client.post(
                            f"/v1/models/{NAME}:predict",
                            content=npy(x),
                            headers={"Content-Type": "application/x-npy"},
                        )
                        body = resp.json()
                        answers.append(
                            (resp.status_code, body.get("version"), body.get("predictions"))
                        )
                        seen.append(body.get("version"))
                        if last:
                            break
                    per_client.append(seen)

                async def publisher() -> None:
                    for v in VERSIONS:
                        await asyncio.sleep(0.01)
                        resp = await client.post(
                            f"/v1/models/{NAME}/versions",
                            files=parts[v],
                            headers={"Authorization": f"Bearer {TOKEN}"},
                        )
                        assert resp.status_code == 201, resp.text
                    done.set()

                await asyncio.gather(*(load() for _ in range(16)), publisher())
        return answers, per_client

    answers, per_client = asyncio.run(main())
    assert answers and all(status == 200 for status, _, _ in answers)
    for _, version, predictions in answers:
        assert predictions == expected[version]  # one model answered the whole request
    for seen in per_client:
        assert seen == sorted(seen)  # a client never goes back to an older version
        assert seen[-1] == VERSIONS[-1]
    assert np.unique([v for _, v, _ in answers]).size >= 2
