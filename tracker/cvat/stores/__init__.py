"""Tracking states of the lambda protocol between requests: in memory, or Redis with a cache."""
