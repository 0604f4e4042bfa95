"""The training layer: the engine, stopping and requeue, run directories, memory probing, losses,
schedules, checkpoints, distributed helpers, TensorBoard, and heads trained on frozen embeddings.
`python -m hpa.training` is train_fold.py's command line, as torchrun starts it on each GPU."""
