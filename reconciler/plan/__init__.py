"""Desired state, diff -> Plan[Action], status folding (pure)."""
