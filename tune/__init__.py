"""Distributed hyperparameter search for moodtheme: Ray Tune + Optuna + MLflow (docs/tune.md)."""
