"""Everything gitops-push shows: ``console`` (one console for people on stderr, one for
data on stdout), ``envelope`` (the JSON envelope), ``tables``, ``markdown`` and
``progress`` (live and CI-log progress of a run)."""

from __future__ import annotations

from gitops_push.output.console import (
    err_console,
    error,
    message,
    out_console,
    visible,
    warn,
    write_stdout,
)
from gitops_push.output.envelope import (
    SCHEMA_VERSION,
    Envelope,
    changeset_data,
    error_entry,
    print_json,
    report_data,
    report_envelope,
    verify_data,
)
from gitops_push.output.markdown import (
    MARKDOWN_LIMIT,
    md_code,
    md_escape,
    report_markdown,
    truncate_markdown,
)
from gitops_push.output.progress import LiveReporter, PlainReporter, reporter
from gitops_push.output.tables import (
    audit_table,
    changeset_table,
    init_text,
    locks_table,
    reason_text,
    report_table,
    status_table,
    verify_text,
)
from gitops_push.run.serialize import outcome_data

__all__ = [
    "MARKDOWN_LIMIT", "SCHEMA_VERSION", "Envelope", "LiveReporter", "PlainReporter",
    "audit_table", "changeset_data", "changeset_table", "err_console", "error", "error_entry",
    "init_text", "locks_table", "md_code", "md_escape", "message", "out_console",
    "outcome_data", "print_json", "reason_text", "report_data", "report_envelope",
    "report_markdown", "report_table", "reporter", "status_table", "truncate_markdown",
    "verify_data", "verify_text", "visible", "warn", "write_stdout",
]
