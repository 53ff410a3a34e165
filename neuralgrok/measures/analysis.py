"""How well each logged measure tracks the test loss, and how far its change precedes the test-accuracy
jump: :func:`analyze` of a run's ``metrics.csv`` (``neuralgrok analyze RUN``), :func:`correlation_table`
of several runs' (``neuralgrok analyze SWEEP``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

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


def change_point(steps: np.ndarray, values: np.ndarray) -> float:
    """The step where ``values`` (logged at ``steps``, in order) change level: the series is split in
    two where the two segments' means fit it best (least squares; the single change point of a step
    function is found exactly, a smooth transition's near its middle), and the first step of the second
    segment is returned. Either direction of change counts. NaN for fewer than 2 values or a constant
    series; non-finite values are left out."""
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    if len(values) < 2 or np.ptp(values) == 0:
        return float("nan")
    centred = values - values.mean()  # cumulative sums without cancellation
    n, k = len(centred), np.arange(1, len(centred))
    sums, squares = np.cumsum(centred)[:-1], np.cumsum(centred ** 2)[:-1]
    # Sum of squared deviations from each segment's mean, for the split before index k.
    residual = squares - sums ** 2 / k + (centred @ centred - squares) - (centred.sum() - sums) ** 2 / (n - k)
    return float(steps[1 + int(np.argmin(residual))])


def _accuracy_jump(steps: np.ndarray, accuracy: np.ndarray, min_jump: float) -> float:
    """:func:`change_point` of the test accuracy where it rises there by at least ``min_jump`` (the
    means after and before), else NaN: a run whose test accuracy never jumped."""
    step = change_point(steps, accuracy)
    finite = np.isfinite(accuracy)
    after = steps[finite] >= step
    if np.isnan(step) or accuracy[finite][after].mean() - accuracy[finite][~after].mean() < min_jump:
        return float("nan")
    return step


# Columns of a run's metrics.csv (neuralgrok.experiments.records.METRIC_COLUMNS, and the hold-out test parts of
# neuralgrok.experiments.records.part_columns) that are not progress measures.
NOT_MEASURES = ("step", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "wall_time_s",
                "test_held_loss", "test_held_accuracy", "test_rest_loss", "test_rest_accuracy")


ANALYSIS_COLUMNS = ("measure", "n", "pearson", "spearman", "pearson_log", "drop_step", "drop_size", "grok_step",
                    "lag", "memorisation_step", "n_window", "spearman_window", "change_step", "jump_step", "lead")


def analyze(metrics: Any, *, measures: Optional[Sequence[str]] = None, grok_accuracy: float = 0.95,
            smooth: int = 1, memorised_accuracy: float = 0.99, min_jump: float = 0.1) -> Any:
    """How each logged measure relates to the test loss and to the grokking step.

    Args:
        metrics: a pandas DataFrame or a CSV path with columns ``step``, ``test_loss``,
            ``test_accuracy`` and one column per measure (a run's ``metrics.csv``).
        measures: the measure columns; default every numeric column but the runner's
            bookkeeping ones (:data:`NOT_MEASURES`) and those that repeat an earlier one on every
            row (``step_grad_age`` is ``grad_age`` when the method leaves the gradient as it is).
        grok_accuracy: the grokking step is the first logged step with
            ``test_accuracy >= grok_accuracy``.
        smooth: window of a centred running median applied to each measure before looking
            for its largest drop (1 = raw values); it ignores isolated outliers shorter than
            half the window.
        memorised_accuracy: the memorisation step is the first logged step with
            ``train_accuracy >= memorised_accuracy`` (when the table has that column).
        min_jump: the test accuracy must rise by at least this (mean after its change point minus
            mean before) for the run to have a test-accuracy jump.

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
        - ``change_step``: the measure's change point (:func:`change_point`, either direction);
          ``jump_step``: the test accuracy's (NaN when it rises by less than ``min_jump``: no jump);
          ``lead = jump_step - change_step`` in steps: positive when the measure changes before the
          test accuracy jumps, negative when after (a lag).

    Correlations use scipy.stats when installed and numpy otherwise (same values).
    """
    import pandas as pd

    table = pd.read_csv(metrics) if isinstance(metrics, (str, Path)) else metrics
    missing = {"step", "test_loss", "test_accuracy"} - set(table.columns)
    if missing:
        raise ValueError(f"analyze(): the metrics table lacks the columns {sorted(missing)}")
    table = table.sort_values("step").reset_index(drop=True)
    if measures is None:
        measures = []
        for column in table.select_dtypes("number").columns:
            values = table[column].to_numpy(dtype=float)
            if column not in NOT_MEASURES and not any(
                    np.array_equal(values, table[kept].to_numpy(dtype=float), equal_nan=True) for kept in measures):
                measures.append(column)
    steps = table["step"].to_numpy(dtype=float)
    test_loss = table["test_loss"].to_numpy(dtype=float)
    grokked = np.flatnonzero(table["test_accuracy"].to_numpy(dtype=float) >= grok_accuracy)
    grok_step = float(steps[grokked[0]]) if len(grokked) else float("nan")
    memorised = (np.flatnonzero(table["train_accuracy"].to_numpy(dtype=float) >= memorised_accuracy)
                 if "train_accuracy" in table.columns else np.array([], dtype=int))
    memorisation_step = float(steps[memorised[0]]) if len(memorised) else float("nan")
    window = (steps >= memorisation_step) & (steps <= grok_step)  # all False when either is NaN
    jump_step = _accuracy_jump(steps, table["test_accuracy"].to_numpy(dtype=float), min_jump)

    rows = []
    for name in measures:
        values = table[name].to_numpy(dtype=float)
        both = np.isfinite(values) & np.isfinite(test_loss)
        in_window = both & window
        logged = both & (test_loss > 0)
        drop_step, drop_size = _largest_drop(steps[np.isfinite(values)], values[np.isfinite(values)], smooth)
        change_step = change_point(steps, values)
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
            "change_step": change_step,
            "jump_step": jump_step,
            "lead": jump_step - change_step,
        })
    return pd.DataFrame(rows, columns=list(ANALYSIS_COLUMNS))


# The columns of correlation_table's printed form, after "run" and "measure".
CORRELATION_COLUMNS = ("spearman", "spearman_window", "n_window", "memorisation_step", "grok_step", "change_step",
                       "jump_step", "lead")


def correlation_table(metrics: Mapping[str, Any], **options: Any) -> Any:
    """:func:`analyze` of several runs in one table: a ``run`` column (the keys of ``metrics``), then
    :data:`ANALYSIS_COLUMNS`, one row per run and measure, runs in the mapping's order.

    Args:
        metrics: ``{run name: metrics table}``, each a DataFrame or a ``metrics.csv`` path.
        options: passed to :func:`analyze` (``grok_accuracy``, ``smooth``, ``min_jump``, ...).

    The printed form (``neuralgrok analyze SWEEP``) keeps ``run``, ``measure`` and
    :data:`CORRELATION_COLUMNS`: Spearman's rho with the test loss over the whole run and over the
    window from memorisation to generalisation, and the lead (steps; negative: a lag) of each measure's
    change point on the test-accuracy jump.
    """
    import pandas as pd

    tables = [analyze(table, **options).assign(run=name) for name, table in metrics.items()]
    if not tables:
        return pd.DataFrame(columns=["run", *ANALYSIS_COLUMNS])
    return pd.concat(tables, ignore_index=True)[["run", *ANALYSIS_COLUMNS]]


def write_analysis(analysis: Any, path: Union[str, Path]) -> Path:
    """Write :func:`analyze`'s table as CSV (parent directories created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    analysis.to_csv(path, index=False)
    return path
