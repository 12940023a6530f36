"""Custom Kedro datasets (versioned folders of arrays/tables/weights)."""

from compcars_kedro.datasets.checkpoint import CheckpointDataset
from compcars_kedro.datasets.crops import CropsStore, CropsStoreDataset
from compcars_kedro.datasets.embeddings import EmbeddingsDataset, EmbeddingSet
from compcars_kedro.datasets.mlflow_model import MlflowEmbeddingModelDataset
from compcars_kedro.datasets.optional import OptionalCSVDataset
from compcars_kedro.datasets.raw import RawImagesDataset
from compcars_kedro.datasets.tables import GridResultsDataset, JsonDataset, TableDataset

__all__ = ["CheckpointDataset", "CropsStore", "CropsStoreDataset", "EmbeddingSet",
           "EmbeddingsDataset", "GridResultsDataset", "JsonDataset", "MlflowEmbeddingModelDataset", "OptionalCSVDataset",
           "RawImagesDataset", "TableDataset"]
