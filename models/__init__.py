"""SUSHI models."""
