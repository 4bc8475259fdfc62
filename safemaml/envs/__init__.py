"""Batched MuJoCo stepping and the Gymnasium-compatible environments built on it."""
