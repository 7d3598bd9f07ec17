"""Constrained decoding: grammars compiled by llguidance, applied as per-row token masks.

`compiler.py` turns a JSON schema, regex, choice list or Lark grammar into a `Constraint` (off the
engine thread); `masks.py` computes the masks of every constrained row of a step while the forward
runs, and the shared sampler applies them. Rows without a constraint never reach this package.
"""
