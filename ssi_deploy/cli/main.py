"""Entry point of ``ssi-deploy``: the click group and the one-line error policy.

Each command lives in its own module under ``ssi_deploy.cli`` and is listed in COMMANDS;
commands only parse arguments and call the library. A user mistake raises ``SSIError`` (or
a click usage error) and ends as one line on stderr with a non-zero exit code, never a
traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from .. import __version__
from ..errors import SSIError

# module name -> click command attribute in it (one module per command, loaded lazily so that
# `ssi-deploy --help` stays fast and a missing optional dependency only affects its command).
COMMANDS = {
    "zoo": "ssi_deploy.cli.zoo_cmd:zoo",
    "flops": "ssi_deploy.cli.flops_cmd:flops",
    "inspect-checkpoint": "ssi_deploy.cli.inspect_cmd:inspect_checkpoint",
    "export": "ssi_deploy.cli.export_cmd:export",
    "validate": "ssi_deploy.cli.validate_cmd:validate",
    "profile": "ssi_deploy.cli.profile_cmd:profile",
    "build": "ssi_deploy.cli.build_cmd:build",
    "doctor": "ssi_deploy.cli.doctor_cmd:doctor",
    "detect": "ssi_deploy.cli.detect_cmd:detect",
    "eval": "ssi_deploy.cli.eval_cmd:eval_",
    "triton-repo": "ssi_deploy.cli.triton_repo_cmd:triton_repo",
    "serve": "ssi_deploy.cli.serve_cmd:serve",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ssi-deploy")
def cli():
    """Deploy spatially adaptive (SSI) CNNs: PyTorch models, ONNX export with the SSI ops,
    TensorRT plugins, validation against PyTorch and latency profiles.

    Run `ssi-deploy COMMAND --help` for the options of a command.
    """


def main(argv: list[str] | None = None) -> int:
    try:
        # Non-standalone click returns a command's return value, or the code of a ctx.exit(n).
        rv = cli.main(args=argv, prog_name="ssi-deploy", standalone_mode=False)
    except SSIError as e:
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as e:  # usage mistakes too: one line, with where to look
        cmd = getattr(getattr(e, "ctx", None), "command_path", None) or "ssi-deploy"
        hint = f" (see `{cmd} --help`)" if isinstance(e, click.UsageError) else ""
        click.echo(f"error: {e.format_message()}{hint}", err=True)
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
