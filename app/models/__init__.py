"""The twelve-model chain.

Entry points for the rest of the app (none of them imports torch):

- :mod:`app.models.client` — :class:`~app.models.client.ModelClient`, the handle the UI,
  CLI and service use to run jobs on the model worker process;
- :mod:`app.models.registry` — the twelve slots and each backend's status;
- :mod:`app.models.weights` — find, download, verify and delete model weights;
- :mod:`app.models.commands` — ``amc models``.

Torch and model code run only inside the worker (:mod:`app.models.worker`) and are
imported lazily by the backends in :mod:`app.models.backends`.
"""
