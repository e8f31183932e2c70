"""`ssi-deploy doctor`: check Python, torch, GPU, TensorRT, ONNX Runtime and the plugin library,
and say which workflows this machine can run."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("doctor")
@click.option("--plugins", type=click.Path(path_type=Path), default=None,
              help="Plugin library to check (default: $SSI_PLUGIN_LIBRARY, else the installed one).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the checks and workflows as JSON instead of text.")
def doctor(plugins, as_json):
    """Say what this machine can do: one line per check, with what to do about a failure,
    then a table of workflows (CPU export, validate, profile, native CPU kernels, TensorRT
    build, engine run, Docker) with why each is or is not available.

    Exits 1 when a check failed (warnings and unavailable workflows do not count).
    """
    from ..doctor import FAIL, diagnose
    from ..errors import SSIError
    from .table import format_table

    checks, flows = diagnose(str(plugins) if plugins else None)
    failed = [c.name for c in checks if c.status == FAIL]
    if as_json:
        click.echo(json.dumps({"checks": [c.to_dict() for c in checks],
                               "workflows": [w.to_dict() for w in flows],
                               "failed": failed}, indent=2))
    else:
        for c in checks:
            click.echo(c.line())
        click.echo("")
        click.echo(format_table(["workflow", "available", "why"],
                                [[w.name, "yes" if w.available else "no", w.why] for w in flows]))
        click.echo("")
    if failed:
        err = SSIError(f"{len(failed)} of {len(checks)} checks failed: {', '.join(failed)}")
        err.exit_code = 1
        raise err
    if not as_json:
        click.echo(f"all {len(checks)} checks passed")
