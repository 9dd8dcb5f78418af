"""Shared test support: for the tests under tests/, the app's tests and the benchmarks."""
