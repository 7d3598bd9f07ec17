"""Side-by-side streaming benchmarks for streamchat and its peers (run: python -m bench.run)."""
