"""Imports every command module; each adds its command or sub-app to `main.app`."""

# One import per command module, in help order. Keep this list sorted by command name.
from meshctl.cli import lab  # noqa: F401
from meshctl.cli import show  # noqa: F401
from meshctl.cli import state  # noqa: F401
