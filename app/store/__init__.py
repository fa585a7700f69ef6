"""Durable service state: one ``Store`` interface, Redis and embedded SQLite implementations."""
