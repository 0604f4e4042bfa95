"""The training layer: the engine, stopping and requeue, run directories, memory probing, losses,
schedules, checkpoints, distributed helpers, TensorBoard, and heads trained on frozen embeddings.
torchrun starts train_fold.py's command line, `python -m hpa.cli.train_fold`, on each GPU."""
