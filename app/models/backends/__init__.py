"""One module per backend; the contract is :mod:`app.models.backends.base`.

Backend modules import torch/transformers/diffusers lazily (inside ``run``/helpers), so
the registry can import them to read class attributes and statuses in any process.
"""
