"""Conductor: the `h2k` CLI and control plane (configs, waves, scheduling, state, reports)."""
