"""Batched MuJoCo stepping (the physics the task families run on)."""
