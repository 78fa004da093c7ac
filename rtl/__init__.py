"""SUSHI rtl."""
