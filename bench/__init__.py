"""The benchmark's modules (import-free). A package, so that `bench.run` and its siblings are
found under the checkout on sys.path rather than as bench/bench.py, the entry point that
`python bench/bench.py` puts first on sys.path."""
