"""Planning: pure functions from desired (and observed) state to what would change.

``inventory_diff``/``markdown``: what a change to the inventory would do (``reconciler plan``).
"""
