"""Frozen content encoders (text, image) and the on-disk feature cache."""
