"""The GPU pool check: Ray Tune trials packed on one lent GPU machine, measured.

The machine is offline and lacks Ray, Optuna and pydantic, and a call to it carries at most
64 MiB of files. So:

- ``gpu/prepare_wheels.py`` (run here) downloads and slims the missing wheels into ``.whl/``;
- ``bash gpu/pool_check.sh`` (run there) installs them under ``/tmp/site``, generates
  synthetic data, runs the measurements and writes ``results.json`` and ``results.md`` to
  ``$OUT``; ``--dry-run`` runs the same pipeline here on the CPU at a tiny size.

docs/benchmarks.md ("GPU pool") gives the device calls and what each figure means.
"""
