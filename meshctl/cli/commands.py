"""Imports every command module; each adds its command or sub-app to `main.app`."""

# ruff: noqa: I001  (one line per module, so parallel additions never conflict)
# One import per command module, in help order. Keep this list sorted by command name.
from meshctl.cli import apply  # noqa: F401
from meshctl.cli import audit  # noqa: F401
from meshctl.cli import connectivity  # noqa: F401
from meshctl.cli import drift  # noqa: F401
from meshctl.cli import encryption  # noqa: F401
from meshctl.cli import fqdn  # noqa: F401
from meshctl.cli import impact  # noqa: F401
from meshctl.cli import identity  # noqa: F401
from meshctl.cli import agent  # noqa: F401
from meshctl.cli import lab  # noqa: F401
from meshctl.cli import observe  # noqa: F401
from meshctl.cli import plan  # noqa: F401
from meshctl.cli import policy  # noqa: F401
from meshctl.cli import recover  # noqa: F401
from meshctl.cli import show  # noqa: F401
from meshctl.cli import state  # noqa: F401
from meshctl.cli import status  # noqa: F401
from meshctl.cli import ui  # noqa: F401
from meshctl.cli import uninstall  # noqa: F401
from meshctl.cli import validate  # noqa: F401
