"""Data: the synthetic multi-site generator, MONAI transform chains and datasets."""
