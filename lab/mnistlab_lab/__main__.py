"""``python -m mnistlab_lab ARGS``: the ``mnistlab`` command with the lab loaded, for a source tree where the lab is
not installed (``PYTHONPATH=src:lab``, as on a lent GPU machine); installed (``make setup``), plain ``mnistlab`` has
the lab's models and commands through its entry points."""

from mnistlab.cli import cli, main
from mnistlab_lab import models as _models  # noqa: F401  (registers the lab's models)
from mnistlab_lab.commands import report, reproduce

for command in (report, reproduce):
    if command.name not in cli.commands:
        cli.add_command(command)

main()
