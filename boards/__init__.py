"""SUSHI boards."""
