"""Datasets behind one factory: :func:`create_dataset`.

Every dataset becomes an in-memory ``uint8 [N, H, W, C]`` array with labels, split deterministically
from a seed into train / val / test, and a :class:`~rkd_edge.data.transforms.ImageTransform` that
resizes, converts channels and normalises whole batches (cheap, and identical everywhere).
"""

from rkd_edge.data.registry import DATASETS, create_dataset, dataset_names
from rkd_edge.data.splits import DataSplits, Split
from rkd_edge.data.transforms import ImageTransform

__all__ = ["DATASETS", "DataSplits", "ImageTransform", "Split", "create_dataset", "dataset_names"]
