"""The run's figures as pictures beside the weights, for the model card: the training loss and the
learning rate over the steps (what LLaMA-Factory users know as training_loss.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

WIDTH, HEIGHT, DPI = 8.0, 4.5, 100  # inches and dots per inch: an 800 x 450 PNG


def loss_curve(log_history: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Training loss (left axis) and learning rate (right axis) by optimizer step; None when the
    run logged no loss."""
    points = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display in a training pod
    import matplotlib.pyplot as plt

    rates = [(e["step"], e["learning_rate"]) for e in log_history if "learning_rate" in e and "step" in e]
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT), dpi=DPI)
    try:
        ax.plot(*zip(*points, strict=True), color="tab:blue", linewidth=1.2, label="training loss")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss (cross-entropy, nats/token)", color="tab:blue")
        ax.grid(True, alpha=0.3)
        if rates:
            lr = ax.twinx()
            lr.plot(*zip(*rates, strict=True), color="tab:orange", linewidth=1.0, linestyle="--", label="learning rate")
            lr.set_ylabel("learning rate", color="tab:orange")
            lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        ax.set_title(title)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
