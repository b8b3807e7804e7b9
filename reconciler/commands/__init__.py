"""One module per command group of the ``reconciler`` CLI; each exposes ``register``."""
