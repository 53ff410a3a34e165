"""The progress measures the runner logs at each evaluation (``--measures med,weight_age,...``):
one ``metrics.csv`` column each, named as the measure, computed by :mod:`neuralgrok.measures` at
the logged weights.

Token ids follow the run's layout: the first operand's residues are ids 0..p-1, the second
operand's ``operand_offset``..``operand_offset + p - 1`` (the "nanda" layout; 0 in the others), so
MED measures both ranges (Gu et al.'s D_1 and D_2, combined as (D_1 + D_2) / 2).

:data:`MEASURES` lists each measure with what it needs; :func:`measure_problems` says which
requested measures are unknown or do not apply to a config.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch

from .. import measures
from .data import RunData, task_of
from .tasks import OPERATIONS


@dataclass
class MeasureInput:
    """What a measure sees at a logged step: the model, the config, the run's data, and the
    logits of the examples just evaluated (``inputs``: every pair of the task, given only when a
    measure has ``all_pairs``). Shared intermediate results are computed once per step."""

    model: torch.nn.Module
    config: object
    data: RunData
    inputs: Optional[torch.Tensor]
    logits: torch.Tensor
    _cache: Dict[str, object] = field(default_factory=dict)

    def _once(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    @property
    def embedding(self) -> torch.Tensor:
        return self.model.token_embedding.weight

    def med(self) -> measures.MEDResult:
        return self._once("med", lambda: measures.med(self.embedding, self.config.p,
                                                      ranges=self.data.layout.operand_offsets))

    def logit_table(self) -> torch.Tensor:
        return self._once("table", lambda: measures.assemble_logit_table(
            self.data.layout.decode(self.inputs).cpu(), self.logits, self.config.p))

    def key_frequencies(self) -> List[int]:
        """Detected from the first operand's embedding rows (seed-dependent, never fixed). A frozen one-hot
        embedding (``embedding_init='onehot_fixed'``, the MLP) is the identity: its spectrum is flat and holds
        no key frequency, so there they are detected from the first operand's effective embedding, the rows
        of ``E W_1a^T`` (``W_1a``: the MLP's first layer on the first position), what the trained part of
        the model makes of each residue."""
        return self._once("keys", lambda: measures.key_frequencies(measures.fourier_norms(
            _residue_embedding(self), self.config.p)))


def _residue_embedding(seen):
    """The matrix whose first-operand rows carry the model's embedding of each residue (see
    :meth:`MeasureInput.key_frequencies`)."""
    if seen.config.embedding_init != "onehot_fixed":
        return seen.embedding
    width = seen.embedding.shape[1]
    return seen.embedding @ seen.model.mlp[0].weight[:, :width].T


def _neuron_logit_map(model):
    """Nanda et al.'s W_L = W_U W_out of the last block, one row per answer residue (p, mlp_width)."""
    return model.head.weight @ model.blocks[-1].mlp[2].weight


def _hidden_med(seen):
    p = seen.config.p
    diagonal = seen.data.layout.encode(torch.arange(p).repeat(2, 1).T).to(seen.embedding.device)
    return measures.hidden_layer_med(seen.model.first_hidden, diagonal).value


def _needs_odd_p(config):
    return None if config.p >= 3 else f"p={config.p}: it needs p >= 3"


def _needs_model(kind):
    return lambda config: None if config.model == kind else f"it needs model='{kind}' (got {config.model!r})"


def _needs_addition(config):
    if OPERATIONS[config.task].name != "a+b" or config.p < 3:
        return f"it is defined for the modular addition task a+b with p >= 3 (got task={config.task!r}, p={config.p})"
    return None


def _needs_addition_and_a_readable_embedding(config):
    if config.embedding_init == "onehot_fixed" and config.model != "mlp":
        return (f"with embedding_init='onehot_fixed' its key frequencies are read from the MLP's first layer, "
                f"and model={config.model!r} has none (the frozen identity embedding holds no frequency)")
    return _needs_addition(config)


def _needs_mlp_on_pairs(config):
    if config.model != "mlp" or OPERATIONS[config.task].arity != 2:
        return f"it needs model='mlp' and a two-operand task (got model={config.model!r}, task={config.task!r})"
    return None


@dataclass(frozen=True)
class Measure:
    """``compute(MeasureInput) -> float``; ``why_not(config)`` says why it does not apply (None: it
    does); ``all_pairs``: it needs the logits of every pair of the task; ``tokens``: it needs a
    modular task (token embeddings), not the polygon images."""

    help: str
    compute: Callable[[MeasureInput], float]
    why_not: Callable[[object], Optional[str]] = lambda config: None
    all_pairs: bool = False
    tokens: bool = True


MEASURES = {
    "med": Measure("Gu et al.'s Main Embedding Diff of both operand ranges, (D_1 + D_2) / 2",
                   lambda seen: seen.med().value, _needs_odd_p),
    "med_cv": Measure("coefficient of variation of MED's gaps, mean over the operand ranges",
                      lambda seen: sum(seen.med().cv) / len(seen.med().cv), _needs_odd_p),
    "hidden_med": Measure("MED on the first hidden layer of diagonal inputs (i, i) (Gu et al.'s measure for "
                          "embedding_init='onehot_fixed')", _hidden_med, _needs_mlp_on_pairs),
    "fourier_gini": Measure("Gini coefficient of the first operand's embedding rows' Fourier norms (Nanda et al.)",
                            lambda seen: measures.fourier_gini(seen.embedding, seen.config.p), _needs_odd_p),
    "neuron_logit_gini": Measure("Gini coefficient of the Fourier norms of the neuron-logit map W_U W_out",
                                 lambda seen: measures.fourier_gini(_neuron_logit_map(seen.model), seen.config.p),
                                 _needs_model("nanda")),
    "restricted_loss": Measure("Nanda et al.'s loss over all pairs with only the key frequencies kept",
                               lambda seen: measures.restricted_loss(seen.logit_table(), seen.key_frequencies()),
                               _needs_addition_and_a_readable_embedding, all_pairs=True),
    "excluded_loss": Measure("Nanda et al.'s loss on the train pairs with the key frequencies removed",
                             lambda seen: measures.excluded_loss(seen.logit_table(), seen.key_frequencies(),
                                                                 seen.data.layout.decode(seen.data.train.inputs)),
                             _needs_addition_and_a_readable_embedding, all_pairs=True),
    "weight_age": Measure("AGE of the weights (AWE), -sum |w| log |w| (NeuralGrok's entropy, of the weights)",
                          lambda seen: measures.weight_age(seen.model), tokens=False),
}


def _why_not(name, config):
    if MEASURES[name].tokens and task_of(config).inputs != "tokens":
        return f"it measures a modular task's tokens (got task={config.task!r})"
    return MEASURES[name].why_not(config)


def measure_problems(names: List[str], config: Any) -> List[str]:
    """Messages for the ``names`` that are unknown or do not apply to ``config`` (empty if none)."""
    unknown = [name for name in names if name not in MEASURES]
    if unknown:
        return [f"measures {unknown} unknown; choose from {sorted(MEASURES)}"]
    valid = sorted(name for name in MEASURES if _why_not(name, config) is None)
    return [f"measure {name!r} does not apply: {_why_not(name, config)}; the measures for this config "
            f"are {valid}" for name in names if _why_not(name, config) is not None]


def needs_all_pairs(names: List[str]) -> bool:
    """Whether any of the measures ``names`` needs the logits of every pair of the task."""
    return any(MEASURES[name].all_pairs for name in names)


def compute_measures(names: List[str], seen: MeasureInput) -> Dict[str, float]:
    """``{name: value}`` of the measures ``names`` at the step ``seen`` describes."""
    with torch.no_grad():
        return {name: float(MEASURES[name].compute(seen)) for name in names}
