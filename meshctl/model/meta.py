"""Kubernetes object metadata as found in manifests (and in `kubectl get -o yaml` exports)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

from meshctl.model.base import Model, check_dns_label, check_dns_subdomain
from meshctl.model.labels import LabelKey, LabelValue
from meshctl.model.staging import check_mode_annotation

# A field Kubernetes accepts that means nothing here: parsed, never dumped or shown.
IGNORED: Any = Field(default=None, exclude=True, repr=False)


class ObjectMeta(Model):
    """name, namespace, labels, annotations; server-set fields are accepted and ignored."""

    name: Annotated[str, AfterValidator(check_dns_subdomain)]
    namespace: Annotated[str, AfterValidator(check_dns_label)] | None = None
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    # policy.meshctl.io/mode (staged policies) is checked here, so a typo points at its line.
    annotations: Annotated[dict[str, str], AfterValidator(check_mode_annotation)] = Field(
        default_factory=dict
    )
    # Written by the API server; harmless in an exported manifest, meaningless here.
    uid: Any = IGNORED
    resource_version: Any = IGNORED
    generation: Any = IGNORED
    creation_timestamp: Any = IGNORED
    managed_fields: Any = IGNORED
    finalizers: Any = IGNORED
    owner_references: Any = IGNORED
    generate_name: Any = IGNORED  # pods of a Deployment: "api-7d9f-"
    self_link: Any = IGNORED
    deletion_timestamp: Any = IGNORED
    deletion_grace_period_seconds: Any = IGNORED


def default_namespace(cls: type, data: Any) -> Any:
    """Namespaced kinds without metadata.namespace live in "default", as with kubectl."""
    if isinstance(data, dict) and isinstance(data.get("metadata"), dict):
        meta = data["metadata"]
        if meta.get("namespace") is None:
            data = {**data, "metadata": {**meta, "namespace": "default"}}
    return data
