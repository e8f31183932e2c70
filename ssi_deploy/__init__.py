"""ssi-deploy: spatially adaptive inference (SSI) models, exported and run with real sparsity."""

__version__ = "0.1.0"
