"""Running a command over stacks: ``model.py`` (options, report, session, outcomes),
``select.py``, ``waves.py`` (the one scheduler) and one module per command: ``plan.py``,
``apply.py``, ``drift.py``, ``rollback.py``, ``status.py``, plus saved plans, fan-out,
comments and deployment summaries."""
