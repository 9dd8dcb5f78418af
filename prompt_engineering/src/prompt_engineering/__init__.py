"""Evolve TwinService's system prompt with OpenEvolve; publish it only when it wins."""
