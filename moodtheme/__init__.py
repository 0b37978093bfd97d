"""moodtheme: music mood/theme tagging on MTG-Jamendo, reproducing MediaEval 2019 AMLAG.

The core library: data, models, trainer and evaluation. It knows nothing of Ray, Optuna
or MLflow; `tune` and `ablations` adapt it.
"""

__version__ = "0.1.0"
