"""The bundled search spaces (YAML), shipped with the package.

``python -m tune.search --space attn.yaml`` (or ``--space attn``) finds them by name from any
folder; `tune.space.resolve_space_file` owns the lookup.
"""
