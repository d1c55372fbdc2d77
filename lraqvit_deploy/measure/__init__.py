"""Measuring: how close outputs are (`closeness`), what machine ran it (`host`), and interleaved timing rounds
(`rounds`). The backends, the Jetson bundle and the benchmarks all measure through here."""
