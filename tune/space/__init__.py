"""Search spaces: a YAML file, validated, compiled into an Optuna define-by-run function.

A space file names a base preset and config overrides, the parameters to search (dotted
config keys with a distribution), values derived from them, the metric, the ASHA and
sampler settings, the resources per trial, and optional smaller ``budgets``::

    name: attn
    preset: submission2
    metric: val_pr_auc_macro          # mode follows: max for AUCs, min for losses
    num_samples: 48
    max_concurrent_trials: 4
    resources: {cpu: 4, gpu: 0.5}
    asha: {max_t: 120, grace_period: 10, reduction_factor: 3}
    sampler: {name: tpe, seed: 0}
    params:
      model.attention.heads: {type: choice, values: [1, 2, 4, 8],
                              when: {model.attention.enabled: true}}
      model.segments: {type: choice, values: [8, 16, 32]}
      augment.mixup_alpha: {type: uniform, low: 0.0, high: 2.0}
    derived:
      model.segment_frames: {divide: data.input_frames, by: model.segments}
    budgets:
      quick: {preset: quick, num_samples: 8, asha: {max_t: 4, grace_period: 1}}

Every mistake raises :class:`SpaceError` with one line, ``<file>: <field path>: <problem and
fix>``. Each trial trains ``optim.epochs = asha.max_t`` epochs; ASHA may stop it earlier.

The modules, in the order a file goes through them: ``reader`` (YAML, refusing what a space
file never needs), ``file`` with ``schema`` and ``fields`` (the pydantic schema), ``load``
(compiling into a :class:`SearchSpace`, ``search_space``), ``drawable`` (every value a trial
can draw, checked against the config and the metric).
"""

from tune.space.errors import SpaceError
from tune.space.load import bundled_spaces, load_space, resolve_space_file
from tune.space.params import Derived, Param
from tune.space.schema import Asha, Resources, SamplerSpec
from tune.space.search_space import SearchSpace

__all__ = [
    "Asha",
    "Derived",
    "Param",
    "Resources",
    "SamplerSpec",
    "SearchSpace",
    "SpaceError",
    "bundled_spaces",
    "load_space",
    "resolve_space_file",
]
