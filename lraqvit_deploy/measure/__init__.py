"""Measuring: how close outputs are (`closeness`), what machine ran it (`host`), interleaved timing rounds
(`rounds`), and cost tables of a model's Linear shapes (`costs`, `deploy profile`). The backends, the Jetson
bundle and the benchmarks all measure through here."""
