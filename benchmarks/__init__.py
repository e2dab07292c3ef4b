"""Load benchmarks: this proxy side by side with direct access and nginx doing the same split.

Run `python -m benchmarks.run [--quick] [--out benchmarks/results]`; see benchmarks/README.md.
"""
