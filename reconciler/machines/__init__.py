"""Provisioning and inspection state tables (pure)."""
