"""Estimator configs (package data): one JSON per published model size, plus gpus.json.

Read with importlib.resources through reel.engine.estimate; each number names its source."""
