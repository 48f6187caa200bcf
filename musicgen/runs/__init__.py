"""A run directory and a bundled model on disk: paths and lock, config.json and vocab.json, the
metrics log, weights and checkpoints (written whole or not at all), the bundled models and the
card.
"""
