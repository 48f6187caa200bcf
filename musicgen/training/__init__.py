"""Training a model: the entry point `train()`, the compiled step, loss and schedule, the
streams a strategy reads, progress and timing, the best checkpoint and patience, signals and
faults, fine-tuning from a parent model and exporting a bundled model.
"""
