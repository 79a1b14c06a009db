"""Unsupervised anomaly detection methods, all with ``fit(train_dataset)`` / ``predict(images)``.

Every module in this folder is imported here, and every class that declares itself a benchmark
method (:attr:`~mvtec_tutorial.models.base.AnomalyDetector.benchmark_names`) is exported under
its own name: a new method is one new file, with nothing to list anywhere else.
"""
import importlib
import pkgutil

from mvtec_tutorial.models.base import AnomalyDetector, NotFittedError, benchmark_methods

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
_EXPORTED = {cls.__name__: cls for cls in benchmark_methods().values() if cls.__module__.startswith(__name__)}
globals().update(_EXPORTED)

__all__ = ["AnomalyDetector", "NotFittedError", *_EXPORTED]
