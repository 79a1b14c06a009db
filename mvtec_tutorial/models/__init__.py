"""Unsupervised anomaly detection methods, all with ``fit(train_dataset)`` / ``predict(images)``."""
from mvtec_tutorial.models.base import AnomalyDetector, NotFittedError
from mvtec_tutorial.models.mean_image import MeanImage

__all__ = ["AnomalyDetector", "NotFittedError", "MeanImage"]
