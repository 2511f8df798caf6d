"""The run's figures as pictures beside the weights, for the model card: the training loss and the
learning rate over the steps (what LLaMA-Factory users know as training_loss.png)."""

from __future__ import annotations

from collections.abc import Sequence
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
        _save(fig, ax, title, path)
    finally:
        plt.close(fig)
    return path


def _save(fig: Any, ax: Any, title: str, path: Path) -> None:
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


# Subject names of Taiwanese benchmarks are Chinese; the first of these fonts that is installed
# draws them (the trainer image installs WenQuanYi Micro Hei), else matplotlib's default.
# matplotlib's font scan skips TrueType collections (.ttc), the form these come in: added by file.
CJK_FONTS = ["WenQuanYi Micro Hei", "Noto Sans CJK TC", "Noto Sans CJK JP"]
CJK_FONT_FILES = ("wqy-microhei.ttc", "NotoSansCJK-Regular.ttc")
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))


def _cjk_fonts() -> list[str]:
    from matplotlib import font_manager

    for root in FONT_DIRS:
        for name in CJK_FONT_FILES:
            for found in root.rglob(name) if root.is_dir() else ():
                font_manager.fontManager.addfont(str(found))
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return [f for f in CJK_FONTS if f in installed]


def subject_bars(subjects: Sequence[Any], path: Path, title: str) -> Path | None:
    """Accuracy by subject as horizontal bars, weakest at the top, each labelled with its score
    and question count; None when there are no subjects."""
    if not subjects:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fonts = [*_cjk_fonts(), "DejaVu Sans"]
    height = max(HEIGHT, 1.2 + 0.3 * len(subjects))
    with plt.rc_context({"font.family": fonts}):
        fig, ax = plt.subplots(figsize=(WIDTH, height), dpi=DPI)
        try:
            rows = list(reversed(subjects))  # barh draws bottom-up: the weakest ends on top
            bars = ax.barh([s.name for s in rows], [s.score for s in rows], color="tab:blue")
            for bar, s in zip(bars, rows, strict=True):
                ax.text(
                    bar.get_width() + 1, bar.get_y() + bar.get_height() / 2, f"{s.score:g}% (n={s.total})", va="center"
                )
            ax.set_xlim(0, 115)
            ax.set_xlabel("accuracy (% of questions)")
            ax.grid(True, axis="x", alpha=0.3)
            _save(fig, ax, title, path)
        finally:
            plt.close(fig)
    return path
