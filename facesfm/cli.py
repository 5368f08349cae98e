"""The ``facesfm`` command line: a click group that parses options and calls the library.

No logic lives here; every command hands its options to a function in the package.
User-facing errors (:class:`facesfm.errors.FacesfmError`) are printed as one line.
"""

from __future__ import annotations

import os
import sys

import click

from facesfm.errors import FacesfmError

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")


@click.group()
@click.version_option(package_name="facesfm")
def cli():
    """3D face reconstruction from multi-view images by deep SfM with bundle adjustment."""


@cli.command()
@click.option("--out", default="out/demo", show_default=True, type=click.Path())
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--overwrite/--no-overwrite", default=True, show_default=True)
def demo(out, seed, overwrite):
    """Render a built-in face sequence (no shared data needed) and summarise it."""
    from facesfm.render.demo import run_demo

    run_demo(out=out, seed=seed, overwrite=overwrite)


def main(argv=None):
    try:
        cli.main(args=argv, standalone_mode=False)
    except FacesfmError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
