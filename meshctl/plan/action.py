"""What a change does to one object; the values double as display symbols (like Terraform's)."""

from __future__ import annotations

import enum


class Action(enum.Enum):
    """One planned action. `value` is the symbol renderers show."""

    NOOP = " "
    CREATE = "+"
    UPDATE = "~"
    DELETE = "-"
    REPLACE = "-/+"  # delete then create: the object's identity (e.g. endpoint id) changes

    @property
    def json_actions(self) -> list[str]:
        """The `change.actions` list of `terraform show -json`."""
        return {
            Action.NOOP: ["no-op"],
            Action.CREATE: ["create"],
            Action.UPDATE: ["update"],
            Action.DELETE: ["delete"],
            Action.REPLACE: ["delete", "create"],
        }[self]

    @classmethod
    def from_json_actions(cls, actions: list[str]) -> Action:
        for action in cls:
            if action.json_actions == list(actions):
                return action
        raise ValueError(f"unknown actions {actions!r}")

    @property
    def symbol(self) -> str:
        return self.value
