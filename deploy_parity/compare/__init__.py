"""Comparators: judge a candidate backend's outputs against the reference's."""
