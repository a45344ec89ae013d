"""Helpers of scripts/train_shapes_model.py (the built-in shapes model's training)."""
