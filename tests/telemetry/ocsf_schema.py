"""A strict check of an OCSF object against the official schema pydantic-ocsf bundles.

Two independent checks, both must pass:
1. pydantic-ocsf's own model for the class (`ocsf.v1_7_0.events.<Class>`): required attributes, types,
   enum siblings, and category_uid/class_uid/type_uid consistency;
2. a walk over the bundled schema JSON (`ocsf/schemas/v1_7_0.json`), because the models accept unknown
   attributes (`extra="allow"`) and do not check constraints: every attribute must be declared for its
   class or object (through `extends`), or by a profile the event lists in `metadata.profiles`; required
   attributes present; values of the declared type; enum ids among the declared values, their caption
   siblings matching (except 99 Other); `at_least_one`/`just_one` constraints held.

The bundle carries classes, objects and the dictionary but not the profile files, so the attributes of the
`security_control` profile are listed here from ocsf-schema's `profiles/security_control.json` (the ones
present since 1.1); their types and enums still come from the bundled dictionary.
"""

from __future__ import annotations

import importlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import ocsf

VERSION = "v1_7_0"
PROFILE_ATTRIBUTES = {
    "security_control": {"action", "action_id", "attacks", "confidence", "confidence_id", "confidence_score",
                         "disposition", "disposition_id", "firewall_rule", "malware", "policy", "risk_details",
                         "risk_level", "risk_level_id", "risk_score"},
}
# the source schema leaves these enums as placeholders the OCSF compiler fills per class; pydantic-ocsf's
# models check them (fixed per class), and `validate` checks type_uid = class_uid * 100 + activity_id
_COMPILED = {"category_uid", "class_uid", "type_uid", "category_name", "class_name", "type_name"}
_GENERIC_OBJECT = "object"  # `unmapped` and the like: an open object, anything goes inside


class OCSFError(AssertionError):
    pass


@cache
def schema() -> dict[str, Any]:
    path = Path(ocsf.__file__).parent / "schemas" / f"{VERSION}.json"
    return dict(json.loads(path.read_text()))


def _chain(kind: str, name: str) -> list[dict[str, Any]]:
    """`name` and what it extends, nearest first."""
    out, table = [], schema()[kind]
    while name and name in table:
        out.append(table[name])
        name = table[name].get("extends")
    return out


def _attributes(kind: str, name: str) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for level in reversed(_chain(kind, name)):
        for attr, spec in level.get("attributes", {}).items():
            if attr != "$include":
                merged[attr] = _merge(merged.get(attr, {}), spec)
    dictionary = schema()["dictionary"]["attributes"]
    return {a: _merge(dictionary.get(a, {}), spec) for a, spec in merged.items()}


def _merge(general: dict[str, Any], specific: dict[str, Any]) -> dict[str, Any]:
    """A class refines what it extends; its enum adds to (and relabels) the inherited values, as in OCSF."""
    out = {**general, **specific}
    if "enum" in general and "enum" in specific:
        out["enum"] = {**general["enum"], **specific["enum"]}
    return out


def _constraints(kind: str, name: str) -> dict[str, list[str]]:
    for level in _chain(kind, name):
        c = level.get("constraints")
        if isinstance(c, dict) and c:
            return c
    return {}


def _class_name(class_uid: int) -> str:
    for name, spec in schema()["events"].items():
        if spec.get("uid") is not None and class_uid % 1000 == spec["uid"] and spec.get("extends"):
            category = _chain("events", name)
            cat = next((lv.get("category") for lv in category if lv.get("category")), None)
            if cat and _CATEGORY_UID.get(cat) == class_uid // 1000:
                return name
    raise OCSFError(f"class_uid {class_uid} is not an OCSF {VERSION} class")


_CATEGORY_UID = {"system": 1, "findings": 2, "iam": 3, "network": 4, "discovery": 5, "application": 6,
                 "remediation": 7, "unmanned_systems": 8}


def validate(obj: dict[str, Any]) -> None:
    """Raise OCSFError (naming the path) unless `obj` is a valid OCSF event under both checks."""
    class_uid = obj.get("class_uid")
    if not isinstance(class_uid, int):
        raise OCSFError("class_uid missing or not an integer")
    name = _class_name(class_uid)
    model_name = "".join(p.capitalize() for p in name.split("_"))
    model = getattr(importlib.import_module(f"ocsf.{VERSION}.events"), model_name)
    model.model_validate(obj)  # raises pydantic.ValidationError
    if obj.get("type_uid") != class_uid * 100 + obj.get("activity_id", 0):
        raise OCSFError("type_uid is not class_uid * 100 + activity_id")
    profiles = set((obj.get("metadata") or {}).get("profiles") or ())
    unknown_profiles = profiles - PROFILE_ATTRIBUTES.keys()
    if unknown_profiles:
        raise OCSFError(f"metadata.profiles names profiles this check does not know: {unknown_profiles}")
    extra = set().union(*(PROFILE_ATTRIBUTES[p] for p in profiles)) if profiles else set()
    _check_mapping(obj, _attributes("events", name), _constraints("events", name), name, extra)


def _check_mapping(value: dict[str, Any], attrs: dict[str, dict[str, Any]], constraints: dict[str, list[str]],
                   path: str, extra: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    dictionary = schema()["dictionary"]["attributes"]
    for key in value:
        if key not in attrs and key not in extra:
            raise OCSFError(f"{path}.{key}: not an attribute of {path.split('.')[-1]} in OCSF {VERSION}")
    for key, spec in attrs.items():
        if spec.get("requirement") == "required" and value.get(key) is None:
            raise OCSFError(f"{path}.{key}: required")
    for key, item in value.items():
        spec = attrs.get(key) or dictionary.get(key) or {}
        _check_value(item, spec, f"{path}.{key}")
        sibling = spec.get("sibling")
        if "enum" in spec and sibling and sibling in value and item != 99 and key not in _COMPILED:
            caption = spec["enum"][str(item)]["caption"]
            if value[sibling] != caption:
                raise OCSFError(f"{path}.{sibling}: {value[sibling]!r} is not the caption {caption!r} of {key}")
    for rule, names in constraints.items():
        present = [n for n in names if value.get(n) is not None]
        if rule == "at_least_one" and not present:
            raise OCSFError(f"{path}: needs at least one of {names}")
        if rule == "just_one" and len(present) != 1:
            raise OCSFError(f"{path}: needs exactly one of {names}")


def _check_value(item: Any, spec: dict[str, Any], path: str) -> None:
    if spec.get("is_array"):
        if not isinstance(item, list):
            raise OCSFError(f"{path}: must be an array")
        for i, element in enumerate(item):
            _check_value(element, {**spec, "is_array": False}, f"{path}[{i}]")
        return
    type_ = spec.get("type")
    if type_ is None:
        raise OCSFError(f"{path}: no type in the schema")
    base = _base_type(type_)
    if base is not None:
        ok = {"string_t": isinstance(item, str), "integer_t": _is_int(item), "long_t": _is_int(item),
              "float_t": _is_int(item) or isinstance(item, float), "boolean_t": isinstance(item, bool),
              "json_t": True}[base]
        if not ok:
            raise OCSFError(f"{path}: {item!r} is not {type_}")
        if "enum" in spec and path.rsplit(".", 1)[-1] not in _COMPILED and str(item) not in spec["enum"]:
            raise OCSFError(f"{path}: {item!r} is not one of {sorted(spec['enum'])}")
        return
    if not isinstance(item, dict):
        raise OCSFError(f"{path}: must be an object ({type_})")
    if type_ == _GENERIC_OBJECT:
        return
    if type_ not in schema()["objects"]:
        raise OCSFError(f"{path}: unknown object type {type_}")
    _check_mapping(item, _attributes("objects", type_), _constraints("objects", type_), path)


def _base_type(type_: str) -> str | None:
    types = schema()["dictionary"]["types"]["attributes"]
    while type_ in types:
        parent = types[type_].get("type")
        if parent is None:
            return type_
        type_ = parent
    return None


def _is_int(item: Any) -> bool:
    return isinstance(item, int) and not isinstance(item, bool)
