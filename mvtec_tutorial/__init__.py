"""Companion package of the MVTec AD anomaly detection course.

Modules: ``settings``, ``data``, ``synthetic``, ``backbones``, ``training``, ``metrics``,
``thresholds``, ``viz``, ``cache``, ``benchmark`` and ``models`` (one module per method family).
Importing the package does nothing else: no seeding, no download, no file I/O.
"""
__version__ = "0.2.0"
