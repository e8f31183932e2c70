"""`ssi-deploy doctor`: check Python, torch, GPU, TensorRT, ONNX Runtime and the plugin library."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("doctor")
@click.option("--plugins", type=click.Path(path_type=Path), default=None,
              help="Plugin library to check (default: $SSI_PLUGIN_LIBRARY, else the installed one).")
def doctor(plugins):
    """Say what this machine can do: one line per check, with what to do about a failure.

    Exits 1 when a check failed (warnings do not count).
    """
    from ..doctor import FAIL, run_checks
    from ..errors import SSIError

    checks = run_checks(str(plugins) if plugins else None)
    for c in checks:
        click.echo(c.line())
    failed = [c.name for c in checks if c.status == FAIL]
    if failed:
        err = SSIError(f"{len(failed)} of {len(checks)} checks failed: {', '.join(failed)}")
        err.exit_code = 1
        raise err
    click.echo(f"all {len(checks)} checks passed")
