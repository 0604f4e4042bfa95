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


class LabelError(HPAError, ValueError):
    """A labels or Id table is malformed; the message names the file and row."""


class SampleError(HPAError, ValueError):
    """A sample's image files are missing, unreadable or inconsistent; the message names the file."""


class PredictionError(HPAError, ValueError):
    """A prediction file breaks the contract; the message names the file."""


class CheckpointError(HPAError):
    """A checkpoint is missing, corrupt or of another kind; the message names the file."""


class WeightsError(HPAError, ValueError):
    """A weights file is missing or does not fit the model; the message names the file."""


class BundleError(HPAError):
    """A bundle that is incomplete, altered or of another format."""


class DiskFullError(HPAError, OSError):
    """A write failed for want of space; the message names the file and the free space."""


class LockedError(HPAError):
    """Another live process holds the lock of a directory; the message names it."""


class OutOfMemory(RunError):
    """A step ran out of device memory; the message says at which side and micro-batch, and what to set."""


class TransientError(HPAError):
    """A download worth another try: HTTP 5xx or 429, a timeout, a cut body, a dropped connection."""
