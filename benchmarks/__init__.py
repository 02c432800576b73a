"""Benchmarks of the data path, the training step, Ray Tune and memory.

Run them with ``python benchmarks/run.py [--quick] [--only NAME ...]``.
"""
