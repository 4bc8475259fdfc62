"""The pluggable objective layer (contract, registry and the built-in objectives).

Filled in by the MAML engine issue: each objective is one module here, registered under the
entry-point group `safemaml.objectives`.
"""
