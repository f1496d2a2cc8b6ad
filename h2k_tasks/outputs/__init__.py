"""Output kinds: what the converted VM is described as for its target (one module per kind)."""
