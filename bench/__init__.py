"""The benchmark (`make bench`): ours against a one-transaction-per-request baseline.

Not part of the product: nothing under dispatcher/, web/ or storage/ imports from here.
See bench/README.md.
"""
