"""Procedural training data that needs no download."""
