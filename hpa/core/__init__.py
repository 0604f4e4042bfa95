"""The ground every layer stands on: atomic writes, content digests, directory locks, device and
precision, and the one checkpoint format (written by training, read by prediction and bundles)."""
