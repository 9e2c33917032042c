"""anatomy: audit what a preference dataset teaches a model, then decide it.

The pipeline reads as the package: ``data`` -> ``models`` -> ``saes`` -> ``features`` ->
``hypotheses`` -> ``evidence``, then ``select`` (decide) -> ``interventions`` -> ``trainers`` -> ``eval``.
Run it with the ``anatomy`` command (see README.md).
"""

__version__ = "0.1.0"
