"""The test suite. Builders in tests/builders make every disk image the tests use."""
