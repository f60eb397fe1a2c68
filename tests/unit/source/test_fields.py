"""Unknown-field hints know the model's shape: a different key valid here, or where a key belongs."""

from __future__ import annotations

import pytest

from meshctl.errors import SourceError
from meshctl.model.cilium import CiliumClusterwideNetworkPolicy
from meshctl.model.inventory import PodDocument
from meshctl.model.k8s import NetworkPolicy
from meshctl.source.documents import Documents, add_document
from meshctl.source.fields import places, shape_of, unknown_field_hint
from meshctl.source.validate import all_aliases
from meshctl.source.yamlines import load_documents


def error_of(text: str) -> str:
    with pytest.raises(SourceError) as info:
        for doc in load_documents(text, "f.yaml"):
            add_document(doc, Documents())
    return str(info.value)


@pytest.mark.parametrize(
    ("model", "path", "hint"),
    [
        (CiliumClusterwideNetworkPolicy, ("description",),
         "unknown field here; description belongs in spec (spec.description)"),
        (CiliumClusterwideNetworkPolicy, ("endpointSelectr",),
         "unknown field; did you mean 'endpointSelector' (at spec.endpointSelector)?"),
        (CiliumClusterwideNetworkPolicy, ("spec", "ingress", 0, "fromEndpoint"),
         "unknown field; did you mean 'fromEndpoints'?"),
        (NetworkPolicy, ("spec", "ingress", 0, "form"), "unknown field; did you mean 'from'?"),
        (NetworkPolicy, ("spec", "podSelector", "matchLabel"), "unknown field; did you mean 'matchLabels'?"),
        (PodDocument, ("nodeName",), "unknown field here; nodeName belongs in spec (spec.nodeName)"),
        (PodDocument, ("zzz",), "unknown field"),
    ],
)
def test_hint(model: type, path: tuple, hint: str) -> None:
    assert unknown_field_hint(model, path, all_aliases()) == hint


def test_a_hint_never_suggests_the_key_given() -> None:
    for model in (CiliumClusterwideNetworkPolicy, NetworkPolicy, PodDocument):
        for key in ("description", "spec", "ingress", "metadata", "name"):
            assert f"did you mean {key!r}" not in unknown_field_hint(model, ("spec", "x", key), all_aliases())


def test_places_lists_every_place_of_a_key() -> None:
    assert sorted(places(shape_of(CiliumClusterwideNetworkPolicy), "description")) == [
        "spec.description", "specs[].description"]


def test_the_issue_case_through_the_loader() -> None:
    text = ("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: x}\n"
            "description: deny all\nspec: {endpointSelector: {}, ingress: [{}]}\n")
    assert error_of(text) == (
        "f.yaml:4: description: unknown field here; description belongs in spec (spec.description)")
