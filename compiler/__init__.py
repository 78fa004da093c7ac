"""SUSHI compiler."""
