"""CDR file generators for the benchmarks (one module per format family)."""
