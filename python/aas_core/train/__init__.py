"""Training and embedding with PyTorch: the only part of aas-core that imports torch.

Install with ``pip install "aas-core[torch]"``. The rest of the package works
without torch.
"""
