"""reconcile_once, the executor, the build queue, scheduler wiring."""
