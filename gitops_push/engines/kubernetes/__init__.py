"""The Kubernetes engine: ``engine.py`` (the EngineSpec), ``settings.py``, ``kubectl.py``,
``objects.py``, ``render.py`` (kustomize and plain manifests), ``lint.py``, ``owners.py``
and ``wait.py``."""
