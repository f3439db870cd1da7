"""tl_med: per-site transfer learning for medical-imaging segmentation.

The library runs without Prefect; ``flows/`` composes it into orchestrated pipelines.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
