"""SUSHI sim."""
