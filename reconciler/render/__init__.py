"""Jinja rendering of cloud-init files, kernel command lines and build requests (pure)."""
