"""Training, evaluation, checkpoints, anomaly scoring and linear probes for pixelar models.

>>> from pixelar.training import TrainConfig, train, load_model, evaluate
>>> result = train(TrainConfig(model="NADE", model_args={"hidden": 100},
...                            data="digits28-binary", epochs=5), "runs/nade")
>>> model = load_model("runs/nade")          # the best checkpoint
>>> evaluate(model, pixelar.data.load("digits28-binary", "test").images)
"""

from .anomaly import AnomalyScores, auroc, corrupt, save_histogram, score_anomalies
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_model, save_checkpoint
from .evaluate import evaluate, format_metrics, nll_per_image, summarize
from .features import extract_features, linear_probe, probe
from .trainer import TrainConfig, TrainingError, build_model, train

__all__ = [
    "TrainConfig",
    "TrainingError",
    "train",
    "build_model",
    "evaluate",
    "summarize",
    "nll_per_image",
    "format_metrics",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "Checkpoint",
    "CheckpointError",
    "corrupt",
    "auroc",
    "score_anomalies",
    "AnomalyScores",
    "save_histogram",
    "extract_features",
    "linear_probe",
    "probe",
]
