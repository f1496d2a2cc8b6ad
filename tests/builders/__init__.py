"""Builders of test guests and source artifacts (disks, VMX, OVA, hives), used by tests and `make demo`."""
