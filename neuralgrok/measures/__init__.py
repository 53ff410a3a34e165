"""Progress measures for grokking, cheap enough to log every few steps.

Every function takes tensors or modules, never a specific model class: pass the embedding matrix
and the token ids of the number tokens explicitly. All of them run under ``torch.no_grad()`` and
return Python floats (or small dicts / dataclasses of them) ready for a metrics table.

Sources:

- MED, the Main Embedding Diff, and its hidden-layer variant: Gu et al., "Beyond Progress
  Measures" (arXiv 2504.03162).
- Weight norm (the L2 norm, and its square, the sum of squares), the classic grokking measure
  (Power et al.; Nanda et al.).
- AGE, NeuralGrok's Absolute Gradient Entropy (arXiv 2504.17243), here also per layer.
- Fourier measures for modular addition (key frequencies, Gini coefficients, restricted and
  excluded loss): Nanda et al., "Progress measures for grokking via mechanistic
  interpretability" (arXiv 2301.05217).
- :func:`analyze`: how well each logged measure tracks the test loss, how far its largest
  drop precedes grokking and its change point the test-accuracy jump; :func:`correlation_table`, the
  same for several runs in one table.

Token-id conventions. A *token range* names the p embedding rows of the residues 0..p-1 in
natural order: either an int offset (rows offset..offset+p-1) or an explicit sequence of p ids.
Logit tables over all pairs are ``(p, p, p)`` indexed ``[a, b, c]`` (c the candidate answer), or
``(p * p, p)`` with row ``a * p + b``.
"""
from .age import age
from .analysis import NOT_MEASURES, analyze, change_point, correlation_table, write_analysis
from .fourier import (assemble_logit_table, excluded_loss, fourier_basis, fourier_gini, fourier_norms, gini,
                      key_frequencies, key_frequency_logits, logit_table, restricted_loss)
from .med import MED_COMBINE, MED_GAPS, MEDResult, hidden_layer_med, med
from .tokens import TokenRange, all_pair_inputs, diagonal_inputs
from .weights import (gradient_age, group_by_module, squared_weight_norm, squared_weight_norm_per_module,
                      squared_weight_norm_per_parameter, weight_age, weight_norm)

__all__ = ["MED_COMBINE", "MED_GAPS", "MEDResult", "NOT_MEASURES", "TokenRange", "age", "all_pair_inputs",
           "analyze", "assemble_logit_table", "change_point", "correlation_table", "diagonal_inputs", "excluded_loss", "fourier_basis", "fourier_gini",
           "fourier_norms", "gini", "gradient_age", "group_by_module", "hidden_layer_med", "key_frequencies",
           "key_frequency_logits", "logit_table", "med", "restricted_loss", "squared_weight_norm",
           "squared_weight_norm_per_module", "squared_weight_norm_per_parameter", "weight_age", "weight_norm", "write_analysis"]
