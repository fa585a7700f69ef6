"""MICRec: inductive (INMO), multimodal and cross-domain recommendation in PyTorch.

The library is self-contained: it never imports the service package ``app``.
"""

__version__ = "0.1.0"
