"""SUSHI gen."""
