"""Label selectors: Kubernetes `LabelSelector` and Cilium's `EndpointSelector`.

Both have `matchLabels` and `matchExpressions` (ANDed; an empty selector selects everything).
A Cilium selector's keys may carry a source prefix (`k8s:io.kubernetes.pod.namespace`).
`matches` gives the plain Kubernetes meaning over a flat label dict; compile decides which
labels an endpoint has (namespace label, `io.cilium.k8s.namespace.labels.*`, sources).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from meshctl.model.base import Model
from meshctl.model.labels import CiliumLabelKey, LabelKey, LabelValue, check_cilium_label_key, check_label_key

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


class LabelSelectorRequirement(Model):
    """One `matchExpressions` entry: In/NotIn need values, Exists/DoesNotExist take none."""

    cilium_keys: ClassVar[bool] = False

    key: str
    operator: Operator
    values: tuple[LabelValue, ...] | None = Field(default=None, validate_default=True)

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        return check_cilium_label_key(key) if cls.cilium_keys else check_label_key(key)

    @field_validator("values")
    @classmethod
    def _values(cls, values: tuple[str, ...] | None, info: ValidationInfo) -> tuple[str, ...] | None:
        operator = info.data.get("operator")
        if operator in ("In", "NotIn") and not values:
            raise ValueError(f"operator {operator} needs a non-empty list of values")
        if operator in ("Exists", "DoesNotExist") and values:
            raise ValueError(f"operator {operator} takes no values (got {list(values)})")
        return values

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        inside = present and labels[self.key] in (self.values or ())
        return inside if self.operator == "In" else not inside


class EndpointSelectorRequirement(LabelSelectorRequirement):
    """A Cilium `matchExpressions` entry: keys may carry a source prefix."""

    cilium_keys: ClassVar[bool] = True


class LabelSelector(Model):
    """Kubernetes metav1.LabelSelector (podSelector, namespaceSelector)."""

    match_labels: dict[LabelKey, LabelValue] | None = None
    match_expressions: tuple[LabelSelectorRequirement, ...] | None = None

    @property
    def is_empty(self) -> bool:
        """An empty selector selects everything in its scope."""
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Plain key/value match of this selector against a flat label dict."""
        if any(labels.get(k) != v for k, v in (self.match_labels or {}).items()):
            return False
        return all(req.matches(labels) for req in self.match_expressions or ())


class EndpointSelector(LabelSelector):
    """Cilium api.EndpointSelector: keys may be `k8s:...`, `any:...` or `reserved:...`."""

    match_labels: dict[CiliumLabelKey, LabelValue] | None = None  # type: ignore[assignment]
    match_expressions: tuple[EndpointSelectorRequirement, ...] | None = None  # type: ignore[assignment]
