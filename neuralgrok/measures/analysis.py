"""How well each logged measure tracks the test loss, and how far its largest drop precedes
grokking: :func:`analyze` of a run's ``metrics.csv`` (``neuralgrok analyze RUN``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank (what Spearman's rho needs)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Each run of equal values gets the mean of the positions it spans.
    run_starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    run_ends = np.r_[run_starts[1:], len(x)]
    mean_rank = (run_starts + run_ends + 1) / 2.0
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(mean_rank, run_ends - run_starts)
    return ranks


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    try:
        from scipy import stats
    except ImportError:
        return _pearson(_average_ranks(x), _average_ranks(y))
    return float(stats.spearmanr(x, y)[0])


def _largest_drop(steps: np.ndarray, values: np.ndarray, smooth: int) -> Tuple[float, float]:
    """(step, size) of the largest decrease between consecutive (smoothed) values."""
    if smooth > 1:
        # A centred running median (shrinking at the ends) drops isolated outliers yet keeps a
        # genuine step where it is; a moving average would smear the step and keep the outlier.
        import pandas as pd

        values = pd.Series(values).rolling(smooth, center=True, min_periods=1).median().to_numpy()
    if len(values) < 2:
        return float("nan"), float("nan")
    decreases = values[:-1] - values[1:]
    i = int(np.argmax(decreases))
    return float(steps[i + 1]), float(decreases[i])


# Columns of a run's metrics.csv (neuralgrok.experiments.records.METRIC_COLUMNS, and the hold-out test parts of
# neuralgrok.experiments.records.part_columns) that are not progress measures.
NOT_MEASURES = ("step", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "wall_time_s",
                "test_held_loss", "test_held_accuracy", "test_rest_loss", "test_rest_accuracy")


def analyze(metrics: Any, *, measures: Optional[Sequence[str]] = None, grok_accuracy: float = 0.95,
            smooth: int = 1, memorised_accuracy: float = 0.99) -> Any:
    """How each logged measure relates to the test loss and to the grokking step.

    Args:
        metrics: a pandas DataFrame or a CSV path with columns ``step``, ``test_loss``,
            ``test_accuracy`` and one column per measure (a run's ``metrics.csv``).
        measures: the measure columns; default every numeric column but the runner's
            bookkeeping ones (:data:`NOT_MEASURES`).
        grok_accuracy: the grokking step is the first logged step with
            ``test_accuracy >= grok_accuracy``.
        smooth: window of a centred running median applied to each measure before looking
            for its largest drop (1 = raw values); it ignores isolated outliers shorter than
            half the window.
        memorised_accuracy: the memorisation step is the first logged step with
            ``train_accuracy >= memorised_accuracy`` (when the table has that column).

    Returns:
        A DataFrame with one row per measure:

        - ``pearson``, ``spearman``: correlation with ``test_loss`` over the rows where both
          are finite; ``pearson_log``: Pearson with log(test_loss) (rows with test_loss > 0).
          Spearman's rho is invariant under the monotone log, so it has no log column.
        - ``drop_step``, ``drop_size``: the largest decrease between consecutive logged (smoothed)
          values is ``drop_size``, reached at ``drop_step`` (the later of the two steps).
        - ``grok_step`` and ``lag = grok_step - drop_step``: positive when the measure's drop
          comes before grokking. NaN when the run never groks.
        - ``memorisation_step``, ``n_window`` and ``spearman_window``: Spearman's rho with
          ``test_loss`` over the rows from the memorisation step to the grokking step (both
          included), the window where the test loss still has to fall; NaN when the run never
          memorises or never groks (or does both at once).

    Correlations use scipy.stats when installed and numpy otherwise (same values).
    """
    import pandas as pd

    table = pd.read_csv(metrics) if isinstance(metrics, (str, Path)) else metrics
    missing = {"step", "test_loss", "test_accuracy"} - set(table.columns)
    if missing:
        raise ValueError(f"analyze(): the metrics table lacks the columns {sorted(missing)}")
    table = table.sort_values("step").reset_index(drop=True)
    if measures is None:
        numeric = table.select_dtypes("number").columns
        measures = [c for c in numeric if c not in NOT_MEASURES]
    steps = table["step"].to_numpy(dtype=float)
    test_loss = table["test_loss"].to_numpy(dtype=float)
    grokked = np.flatnonzero(table["test_accuracy"].to_numpy(dtype=float) >= grok_accuracy)
    grok_step = float(steps[grokked[0]]) if len(grokked) else float("nan")
    memorised = (np.flatnonzero(table["train_accuracy"].to_numpy(dtype=float) >= memorised_accuracy)
                 if "train_accuracy" in table.columns else np.array([], dtype=int))
    memorisation_step = float(steps[memorised[0]]) if len(memorised) else float("nan")
    window = (steps >= memorisation_step) & (steps <= grok_step)  # all False when either is NaN

    rows = []
    for name in measures:
        values = table[name].to_numpy(dtype=float)
        both = np.isfinite(values) & np.isfinite(test_loss)
        in_window = both & window
        logged = both & (test_loss > 0)
        drop_step, drop_size = _largest_drop(steps[np.isfinite(values)], values[np.isfinite(values)], smooth)
        rows.append({
            "measure": name,
            "n": int(both.sum()),
            "pearson": _pearson(values[both], test_loss[both]),
            "spearman": _spearman(values[both], test_loss[both]),
            "pearson_log": _pearson(values[logged], np.log(test_loss[logged])),
            "drop_step": drop_step,
            "drop_size": drop_size,
            "grok_step": grok_step,
            "lag": grok_step - drop_step,
            "memorisation_step": memorisation_step,
            "n_window": int(in_window.sum()),
            "spearman_window": _spearman(values[in_window], test_loss[in_window]),
        })
    return pd.DataFrame(rows, columns=["measure", "n", "pearson", "spearman", "pearson_log", "drop_step",
                                       "drop_size", "grok_step", "lag", "memorisation_step", "n_window",
                                       "spearman_window"])


def write_analysis(analysis: Any, path: Union[str, Path]) -> Path:
    """Write :func:`analyze`'s table as CSV (parent directories created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    analysis.to_csv(path, index=False)
    return path
