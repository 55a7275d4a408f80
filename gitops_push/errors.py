"""One exception hierarchy; the CLI maps it to exit codes in one place.

Exit codes are named here and documented in docs/cli.md. Core code raises these and
never calls ``sys.exit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit code gitops-push can return (docs/cli.md#exit-codes)."""

    OK = 0
    FAILED = 1  # a stack or a tool failed
    USAGE = 2  # bad flag, bad config, bad ref: nothing ran
    CHANGES_PENDING = 3  # plan --detailed-exitcode: changes would be made
    DRIFT_DETECTED = 4  # drift found (and not fixed)
    LOCKED = 5  # a stack lock stayed held past --lock-timeout
    AUDIT_NOT_PUSHED = 6  # the audit record is kept in the spool, not on origin
    AUDIT_INVALID = 7  # audit verify found a broken or edited trail
    INTERNAL = 70  # a bug in gitops-push (EX_SOFTWARE)
    INTERRUPTED = 130  # Ctrl-C / SIGINT
    TERMINATED = 143  # SIGTERM


DOCUMENTED_EXIT_CODES = frozenset(int(c) for c in ExitCode)


class GitopsPushError(Exception):
    """Base error: a message for people, an exit code, an optional path (file:line)."""

    exit_code: ExitCode = ExitCode.FAILED
    code: str = "error"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class UserError(GitopsPushError):
    """Bad flag, bad ref, refused operation: the user can fix it; nothing ran."""

    exit_code = ExitCode.USAGE
    code = "usage"


class ConfigError(UserError):
    """Invalid gitops-push.yaml or engine settings; ``path`` is ``file:line``."""

    code = "config"


class GitError(UserError):
    """A git question could not be answered (unknown ref, not a repository...)."""

    code = "git"


class ParseError(UserError):
    """An IaC file (HCL, YAML manifest) could not be parsed; ``path`` names it."""

    code = "parse"


class LockError(GitopsPushError):
    exit_code = ExitCode.LOCKED
    code = "locked"


class AuditError(GitopsPushError):
    exit_code = ExitCode.AUDIT_NOT_PUSHED
    code = "audit"


class AuditInvalid(GitopsPushError):
    exit_code = ExitCode.AUDIT_INVALID
    code = "audit-invalid"


class Interrupted(GitopsPushError):
    exit_code = ExitCode.TERMINATED
    code = "interrupted"


@dataclass
class ToolError(GitopsPushError):
    """An external tool (terraform, kubectl, git) failed.

    Printed like pre-commit prints CalledProcessError: command, return code and the
    indented tail of its output.
    """

    message: str
    command: Sequence[str] = ()
    returncode: int | None = None
    output_tail: str = ""
    path: str | None = None
    exit_code: ExitCode = field(default=ExitCode.FAILED)
    code: str = "tool"

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    def __str__(self) -> str:
        lines = [self.message]
        if self.command:
            from gitops_push.proc import format_command

            lines.append(f"command: {format_command(self.command)}")
        if self.returncode is not None:
            lines.append(f"return code: {self.returncode}")
        if self.output_tail.strip():
            lines.append("output:")
            lines.extend("    " + line for line in self.output_tail.rstrip().splitlines())
        return "\n".join(lines)
