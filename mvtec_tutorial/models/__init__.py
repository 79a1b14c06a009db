"""Unsupervised anomaly detection methods, all with ``fit(train_dataset)`` / ``predict(images)``."""
from mvtec_tutorial.models.base import AnomalyDetector, NotFittedError
from mvtec_tutorial.models.mean_image import MeanImage
from mvtec_tutorial.models.padim import PaDiM
from mvtec_tutorial.models.patchcore import PatchCore

__all__ = ["AnomalyDetector", "NotFittedError", "MeanImage", "PaDiM", "PatchCore"]
