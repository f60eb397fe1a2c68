"""Imports every command module; each adds its command or sub-app to `main.app`."""

# One import per command module, in help order. Keep this list sorted by command name.
