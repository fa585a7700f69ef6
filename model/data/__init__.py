"""Datasets in the project's CSV format, filtering controls and the seeded inductive split."""
