"""curves.png: central accuracy and loss per round."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fedsys.server.records import RoundRecord


def plot_curves(records: list[RoundRecord], path: Path, title: str) -> None:
    rounds = [r.round for r in records]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    ax_acc.plot(rounds, [r.central_accuracy for r in records], marker=".")
    ax_acc.set(xlabel="round", ylabel="central accuracy", ylim=(0, 1))
    ax_acc.grid(alpha=0.3)
    ax_loss.plot(rounds, [r.central_loss for r in records], marker=".", label="central")
    train = [(r.round, r.train_loss) for r in records if r.train_loss is not None]
    if train:
        ax_loss.plot(*zip(*train, strict=True), marker=".", label="train (clients)")
    ax_loss.set(xlabel="round", ylabel="loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
