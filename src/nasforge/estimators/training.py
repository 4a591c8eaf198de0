"""PLACEHOLDER: the training estimator is being written."""
