"""The project's scripts run in this process, as a user's shell would run them: the same argv, the
same stdout, stderr and exit status, without an interpreter start and a torch import per call.
A subprocess proves nothing more for a one-line error; each script keeps one real subprocess smoke."""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from conftest import ROOT


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_script(script: str | Path, *args, cwd: Path = ROOT) -> Result:
    """`python SCRIPT ARGS...` (a path under the repository root), or `python -m MODULE ARGS...` when
    `script` is `-m` followed by the module name in `args`."""
    if str(script) == "-m":
        module, *args = args
        target, argv0 = (lambda: runpy.run_module(str(module), run_name="__main__", alter_sys=True)), str(module)
    else:
        path = ROOT / script
        target, argv0 = (lambda: runpy.run_path(str(path), run_name="__main__")), str(path)
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd, code = sys.argv, os.getcwd(), 0
    try:
        sys.argv = [argv0, *map(str, args)]
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                target()
            except SystemExit as e:
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # what a subprocess would print before dying
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
    return Result(code, out.getvalue(), err.getvalue())
