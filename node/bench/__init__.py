"""The benchmarks (`fedrollup bench ...`). May import any node subpackage but node.ops."""
