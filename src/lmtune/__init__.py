"""lmtune: fine-tune pretrained language models on your own data, evaluate them, use them."""

from lmtune.config import Config, load_config
from lmtune.errors import CheckpointError, ConfigError, DataError, Interrupted, LmtuneError, ModelError, TrainingError
from lmtune.generator import Generator
from lmtune.inference import Classifier, export_model, load, merge_adapter
from lmtune.search import SearchSummary, search
from lmtune.train.loop import TrainResult, train

__all__ = [
    "CheckpointError",
    "Classifier",
    "Config",
    "ConfigError",
    "DataError",
    "Generator",
    "Interrupted",
    "LmtuneError",
    "ModelError",
    "SearchSummary",
    "TrainResult",
    "TrainingError",
    "export_model",
    "load",
    "load_config",
    "merge_adapter",
    "search",
    "train",
]
__version__ = "0.1.0"
