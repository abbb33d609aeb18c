"""Small language-model experiments for tests: a generated text corpus and lm_tiny configs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fedsys.config import ExperimentConfig, build_config


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """One thread: on a shared two-core machine two threads per process run several times
    slower (they wait for each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


WORDS = {
    "alpha": "def alpha_{i}(x):\n    return x + {i}\n",
    "beta": "class Beta{i}:\n    value = '{i}'\n",
    "gamma": "for k in range({i}):\n    print(k * k)\n",
    "delta": "import os\npath = os.path.join('a', '{i}')\n",
}


def write_jsonl(path: Path, repeats: int = 40) -> Path:
    """One ``.jsonl`` line per snippet, four clients that write different code."""
    lines = [
        json.dumps({"client": client, "text": template.format(i=i)})
        for client, template in WORDS.items()
        for i in range(repeats)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def lm_config(corpus: Path, **lm: Any) -> ExperimentConfig:
    """lm_tiny on the generated corpus: 3 clients, 32-token chunks, a few Adam steps."""
    section: dict[str, Any] = {
        "text": {"source": "jsonl", "path": str(corpus), "seq_len": 32, "public_fraction": 0.25},
        "lora": {"rank": 4},
    }
    for key, value in lm.items():
        if isinstance(value, dict) and isinstance(section.get(key), dict):
            section[key] = {**section[key], **value}
        else:
            section[key] = value
    return build_config(
        {
            "task": "language_model",
            "data": {"num_partitions": 3},
            "strategy": {"min_train_nodes": 2, "min_available_nodes": 2},
            "train": {"optimizer": "adam", "lr": 0.01, "batch_size": 4, "max_steps": 3},
            "runtime": {"seed": 3},
            "lm": section,
        }
    )
