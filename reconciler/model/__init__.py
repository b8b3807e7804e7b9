"""The inventory: frozen dataclasses, schema validation, semantic checks, IPAM (pure)."""
