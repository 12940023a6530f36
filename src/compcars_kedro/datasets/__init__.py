"""Custom Kedro datasets (versioned folders of arrays/tables/weights)."""

from compcars_kedro.datasets.crops import CropsStore, CropsStoreDataset
from compcars_kedro.datasets.raw import RawImagesDataset

__all__ = ["CropsStore", "CropsStoreDataset", "RawImagesDataset"]
