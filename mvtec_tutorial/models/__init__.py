"""Unsupervised anomaly detection methods, all with ``fit(train_dataset)`` / ``predict(images)``."""
from mvtec_tutorial.models.anogan import AnoGAN, FAnoGAN
from mvtec_tutorial.models.autoencoder import ConvAutoencoder
from mvtec_tutorial.models.base import AnomalyDetector, NotFittedError
from mvtec_tutorial.models.feature_dictionary import FeatureDictionary
from mvtec_tutorial.models.gmm_texture import GMMTexture
from mvtec_tutorial.models.mean_image import MeanImage
from mvtec_tutorial.models.padim import PaDiM
from mvtec_tutorial.models.patchcore import PatchCore
from mvtec_tutorial.models.variation_model import VariationModel

__all__ = ["AnomalyDetector", "NotFittedError", "AnoGAN", "ConvAutoencoder", "FAnoGAN", "FeatureDictionary", "GMMTexture", "MeanImage", "PaDiM",
           "PatchCore", "VariationModel"]
