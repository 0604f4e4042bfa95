"""The data layer: image files, label tables, the dataset layout, resolution rules, preparation,
dedup, folds, the training dataset and its samplers, and the prediction-file contract."""
