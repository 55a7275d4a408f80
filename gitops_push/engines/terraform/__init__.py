"""The Terraform / OpenTofu engine: ``engine.py`` (the EngineSpec), ``settings.py``,
``cli.py`` (running the binary), ``plan.py`` (plan JSON to summaries), ``lint.py``."""
