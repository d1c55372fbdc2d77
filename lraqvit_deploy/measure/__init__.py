"""Measuring: how close outputs are (`closeness`), what machine ran it (`host`), interleaved timing rounds
(`rounds`), a step in its own process with its wall time and peak memory (`process`), and cost tables of a
model's Linear shapes (`costs`, `deploy profile`). The backends, the Jetson bundle and the benchmarks all
measure through here."""
