"""Experiments: one run's config flows one way, task -> model -> method -> loop -> records, then
analysis and plots over many runs (docs/architecture.md).

- what a run trains on: :mod:`~.tasks` (modular arithmetic), :mod:`~.polygons` (Gu et al.'s images),
  :mod:`~.data` (the task records and the splits a run gets);
- what it trains: :mod:`~.models` (the models and their records; :mod:`~.resnet`);
- how: :mod:`~.methods` (the method records and the base optimizer);
- the run: :mod:`~.config` (:class:`TrainConfig`, its checks and its CLI flags), :mod:`~.logged_measures`,
  :mod:`~.loop` (:func:`train`, :func:`trained_model`), :mod:`~.records` (run directories, checkpoints, metrics, summaries);
- many runs: :mod:`~.sweeps`, :mod:`~.compare`, :mod:`~.results`, :mod:`~.plots`, :mod:`~.demo`;
- the ``neuralgrok`` command: :mod:`~.cli`.

Example::

    from neuralgrok.experiments import TrainConfig, train
    result = train(TrainConfig(task="a+b", p=47, method="grokfast-ema"), out_dir="runs/x")
"""
from .config import ConfigError, TrainConfig, validate_config
from .loop import RunResult, resume, train, trained_model
from .methods import METHODS, register_method
from .records import Run, load_runs

__all__ = ["ConfigError", "METHODS", "Run", "RunResult", "TrainConfig", "load_runs", "register_method", "resume",
           "train", "trained_model", "validate_config"]
