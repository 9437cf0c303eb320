"""The ``opportune`` command line: one module per command group, all on :func:`main`.

``serve`` and ``demo`` run the server; ``migrate`` the schema; ``config`` validates a
workspace; ``gdpr`` exports, erases and purges; ``import`` takes a customer's history;
``simulate`` runs the simulators; ``train`` and ``models`` build and manage the models;
``users`` manages who signs in to /agent; ``reports rebuild`` recounts the reports'
rollups; ``keys`` manages the admin API's keys.
"""

from __future__ import annotations

import click

from opportune.cli.config import config
from opportune.cli.database import migrate
from opportune.cli.demo import demo
from opportune.cli.errors import Guarded
from opportune.cli.gdpr import gdpr
from opportune.cli.imports import import_group
from opportune.cli.keys import keys
from opportune.cli.models import models
from opportune.cli.reports import reports
from opportune.cli.serve import serve
from opportune.cli.simulate import simulate
from opportune.cli.train import train
from opportune.cli.users import users

__all__ = ["main"]


@click.group(cls=Guarded)
@click.version_option(package_name="opportune")
def main() -> None:
    """Opportune: predictive engagement and predictive routing, self-hosted."""


for _command in (
    serve,
    demo,
    migrate,
    config,
    gdpr,
    import_group,
    simulate,
    train,
    models,
    users,
    reports,
    keys,
):
    main.add_command(_command)
