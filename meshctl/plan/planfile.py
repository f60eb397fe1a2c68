"""The plan file: write and read a Plan as JSON, refusing tampered or incompatible files."""

from __future__ import annotations

import json
from pathlib import Path

import orjson

from meshctl.errors import PlanError
from meshctl.gcpause import paused_gc
from meshctl.plan.model import PLAN_FORMAT_VERSION, Plan, canonical_json, compute_plan_id
from meshctl.state.atomic import atomic_write


def default_plan_path(plans_dir: Path, plan: Plan) -> Path:
    stamp = plan.created_at.replace(":", "").replace("-", "")[:15]
    return plans_dir / f"plan-{stamp}-{plan.plan_id.removeprefix('sha256:')[:12]}.json"


def plan_to_text(plan: Plan) -> str:
    """Pretty JSON (sorted keys, UTF-8) for people and diffs; plan_id covers the canonical body.

    orjson, not the stdlib: json.dumps with an indent runs in pure Python (24 ms against 1.5 ms
    for a 10,000-pod plan, a tenth of an incremental plan)."""
    option = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
    return orjson.dumps(plan.to_json(), option=option).decode()


def write_plan(plan: Plan, path: Path, text: str | None = None) -> Path:
    """`text`: plan_to_text(plan) when the caller has it already (`plan -o json --out`)."""
    if text is None:
        with paused_gc():  # the JSON body is acyclic; collections over a 20-node plan's states cost 1.5 s
            text = plan_to_text(plan)
    atomic_write(path, text.encode())
    return path


def read_plan(path: Path) -> Plan:
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as err:
        raise PlanError(f"{path}: cannot read the plan file: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise PlanError(f"{path}: not a meshctl plan file (not UTF-8 text)") from err
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise PlanError(f"{path}: not a meshctl plan file (invalid JSON: {err})") from err
    if not isinstance(doc, dict) or "format_version" not in doc or "plan_id" not in doc:
        raise PlanError(f"{path}: not a meshctl plan file (no format_version/plan_id)")
    version = str(doc["format_version"])
    if version.split(".")[0] != PLAN_FORMAT_VERSION.split(".")[0]:
        raise PlanError(
            f"{path}: plan format_version {version} is not supported (this meshctl reads "
            f"{PLAN_FORMAT_VERSION.split('.')[0]}.x); make the plan again with this meshctl"
        )
    body = {k: v for k, v in doc.items() if k != "plan_id"}
    if compute_plan_id(body) != doc["plan_id"]:
        raise PlanError(f"{path}: plan file was modified: plan_id does not match its content")
    try:
        plan = Plan.from_json(doc)
    except (KeyError, TypeError, ValueError) as err:
        raise PlanError(f"{path}: malformed plan file: {err}") from err
    if plan.plan_id != doc["plan_id"]:  # a field we do not model changed the canonical form
        raise PlanError(f"{path}: plan file does not round-trip (plan_id {doc['plan_id']}); make it again")
    return plan


__all__ = ["canonical_json", "default_plan_path", "plan_to_text", "read_plan", "write_plan"]
