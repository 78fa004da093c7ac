"""SUSHI scheduler."""
