"""PNG plots comparing methods over training steps (log-x), from the runs' metrics histories.

Uses matplotlib's object API with the Agg canvas, so importing this never changes the
backend of an interactive session.

Example::

    from neuralgrok.experiments.plots import plot_runs
    plot_runs({"baseline": baseline.history, "grokfast-ema": ema.history}, "runs/demo")
"""
from typing import Any, Dict, List, Optional, Sequence, Union
from pathlib import Path

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError as error:  # an optional dependency: the demo's and compare's plots
    raise ImportError(f"neuralgrok's plots need matplotlib ({error}): pip install 'neuralgrok[plots]'") from error

from ..storage.files import atomic_write


def _save(figure, path):
    FigureCanvasAgg(figure)
    with atomic_write(path, "wb") as f:
        figure.savefig(f, format="png", dpi=120, bbox_inches="tight")


def _steps_and(history, column, x="step"):
    # Step 0 has no place on a log axis; every later row is kept.
    rows = [row for row in history if row["step"] > 0]
    return [row[x] for row in rows], [row[column] for row in rows]


def _plot(histories, path, title, ylabel, series, log_y=False):
    """One line per (method, series): ``series`` is ``[(column, label suffix, line style)]``."""
    figure = Figure(figsize=(7, 4.2))
    axes = figure.add_subplot()
    colors = [f"C{i}" for i in range(len(histories))]
    for color, (method, history) in zip(colors, histories.items()):
        for column, suffix, style in series:
            steps, values = _steps_and(history, column)
            axes.plot(steps, values, style, color=color, label=f"{method}{suffix}", linewidth=1.5)
    return _finish(figure, axes, path, title, ylabel, log_y)


def _finish(figure, axes, path, title, ylabel, log_y=False):
    """The shared style (:func:`style_axes`), then save to ``path``."""
    style_axes(axes, title, ylabel, log_y)
    _save(figure, path)
    return path


def style_axes(axes: Any, title: str, ylabel: str, log_y: bool = False, xlabel: str = "optimisation step") -> None:
    """The style every plot shares: log-x (steps), grid, legend (also for a notebook's own axes)."""
    axes.set_xscale("log")
    if log_y:
        axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize="small")


def draw_groups(axes: Any, groups: Dict[str, List[List[Dict[str, float]]]], column: str = "test_accuracy",
                style: str = "-", x: str = "step", colors: Optional[Sequence[str]] = None) -> Any:
    """Draw ``column`` of groups of runs against ``x`` (a metrics column, e.g. ``wall_time_s``) on
    ``axes``: one colour per group, a thin line per run.

    ``groups`` maps a label to a list of metric histories (one per seed); the label is shown
    once in the legend. ``colors`` gives each group's matplotlib colour (default ``C0``, ``C1``, ...
    in order), so that several calls on one axes, one column each, can tell their groups apart.
    Returns ``axes``.
    """
    colors = [f"C{index % 10}" for index in range(len(groups))] if colors is None else list(colors)
    if len(colors) != len(groups):
        raise ValueError(f"{len(colors)} colors for {len(groups)} groups; give one per group")
    for color, (label, histories) in zip(colors, groups.items()):
        for run, history in enumerate(histories):
            xs, values = _steps_and(history, column, x)
            # One legend entry per group, not per run.
            axes.plot(xs, values, style, color=color, linewidth=0.8, alpha=0.8, label=label if run == 0 else None)
    return axes


def plot_groups(groups: Dict[str, List[List[Dict[str, float]]]], path: Union[str, Path],
                title: str = "test accuracy") -> Union[str, Path]:
    """Test accuracy of groups of runs on one log-x axis (see :func:`draw_groups`), saved to ``path``."""
    figure = Figure(figsize=(7, 4.2))
    axes = figure.add_subplot()
    draw_groups(axes, groups)
    return _finish(figure, axes, path, title, "test accuracy")


def plot_runs(histories: Dict[str, List[Dict[str, float]]], out_dir: Union[str, Path], title: str = "") -> List[Path]:
    """Write ``accuracy.png``, ``loss.png`` and ``age.png`` under ``out_dir``; return their paths.

    ``histories`` maps a method name to its list of metric rows (see :mod:`neuralgrok.experiments.records`).
    """
    out_dir = Path(out_dir)
    prefix = f"{title}: " if title else ""
    train_and_test = [("train_{}", " train", "--"), ("test_{}", " test", "-")]
    return [
        _plot(histories, out_dir / "accuracy.png", f"{prefix}accuracy", "accuracy",
              [(c.format("accuracy"), s, style) for c, s, style in train_and_test]),
        _plot(histories, out_dir / "loss.png", f"{prefix}loss", "cross-entropy",
              [(c.format("loss"), s, style) for c, s, style in train_and_test], log_y=True),
        _plot(histories, out_dir / "age.png", f"{prefix}absolute gradient entropy", "AGE of the raw gradient",
              [("grad_age", "", "-")]),
    ]
