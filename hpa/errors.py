"""The toolkit's own errors. Every one carries a one-line message that names the file, row or
flag at fault; `hpa.cli.run` turns them into `error: ...` and exit code 1, so library code never
calls `sys.exit`."""

from __future__ import annotations


class HPAError(Exception):
    """Bad input, a missing prerequisite or a refused action, explained in one line."""


class ConfigError(HPAError, ValueError):
    """A setting is unknown, mistyped or out of range; the message names the file or flag and key."""


class RunError(HPAError):
    """A run directory or its predictions do not match what is asked of them (lost work, stale folds)."""


class Stopped(RunError):
    """Training stopped on a signal after saving last.pt where it stopped; the same command resumes
    it. Reported as `stopped: ...` (exit code 1, so a recipe does not go on to the next fold)."""
