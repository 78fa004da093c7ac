"""CompileError: the one exception the compiler raises for bad input or a network that does not fit."""
from __future__ import annotations

__all__ = ["CompileError", "node_error"]


class CompileError(ValueError):
    """The model cannot be compiled; the message names the node, its op and the attribute/field."""


def node_error(name: str, op: str, what: str) -> CompileError:
    """``node 'conv3' (Conv): <what>``"""
    return CompileError(f"node '{name}' ({op}): {what}")
