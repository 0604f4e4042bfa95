"""The prediction layer: inference with TTA, thresholds, blending, metrics, reports and plots,
class activation maps, folders of own images, embeddings, bundles and BioImage Model Zoo packages.
It imports nothing of the training layer (tests/test_architecture.py)."""
