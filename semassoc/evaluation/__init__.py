"""Evaluation: splits, truth, metrics, methods and the report."""
