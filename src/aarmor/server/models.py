"""Request bodies of the JSON API, validated by pydantic at the edge (DESIGN.md habit 8).

Each model forbids unknown fields and bounds every string, so a malformed request is a 422 naming the
field before anything reaches the pipeline. The routes convert these straight into aarmor's own types
(`Identity`, plain argument dicts); no model travels further in.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from aarmor.canonical import SAFE_INT
from aarmor.context.entries import RESERVED_VALUE_NAMES
from aarmor.identity.revocation import MAX_REASON, MAX_VALUE, VALUE_PATTERN

__all__ = [
    "ActionIn",
    "ContextIn",
    "DecideIn",
    "DelegateIn",
    "EvaluateIn",
    "IdentityIn",
    "OutcomeIn",
    "RevocationIn",
    "SessionIn",
    "SupplyIn",
    "schemas",
]

Name = Annotated[str, Field(min_length=1, max_length=256)]
Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:\-]{1,128}$")]
#: a `context.<name>` the session log accepts (aarmor.context.entries)
ContextName = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,63}$")]
#: a field a deferral needs, with or without the `context.` prefix
SuppliedName = Annotated[str, Field(pattern=r"^(context\.)?[a-z_][a-z0-9_]{0,63}$")]
#: any JSON value the pipeline can canonicalise (integers within +-(2**53 - 1)); checked on every body
Json = Annotated[Any, WithJsonSchema({"x-aarmor": "json-value"})]  # replaced by the $ref in `schemas()`
JSON_VALUE: dict[str, Any] = {"anyOf": [
    {"type": "null"}, {"type": "boolean"}, {"type": "string"},
    {"type": "integer", "minimum": -SAFE_INT, "maximum": SAFE_INT},
    {"type": "number", "not": {"type": "integer"}},
    {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
    {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/JsonValue"}},
]}
#: names an API client may not set: the built-in facts, and the API principal the server records
RESERVED = frozenset(RESERVED_VALUE_NAMES) | {"api_principal"}


class _Body(BaseModel):
    # strict: `"wait": false` or `"success": "yes"` is a 422, not silently coerced
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class IdentityIn(_Body):
    """The identity chain of AARM R6 as the agent claims it (the token authenticates the caller)."""

    human: Name | None = None
    service: Name | None = Field(None, description="default: the name of the agent token creating the session")
    agent: Name | None = None
    roles: list[Name] = Field(default_factory=list, max_length=64)
    scope: list[Name] = Field(default_factory=list, max_length=64)
    token: Annotated[str, Field(min_length=1, max_length=16384)] | None = Field(
        None, description="identity mode jwt: the caller's OIDC/JWT identity token (held in memory only, never "
                          "recorded); the human principal, roles and scopes then come from it")
    delegation: list[Annotated[str, Field(min_length=1, max_length=16384)]] = Field(
        default_factory=list, max_length=16,
        description="a signed delegation chain, root first (the `chain` of POST /v1/sessions/{sid}/delegations)")


class SessionIn(_Body):
    identity: IdentityIn
    original_request: str | None = Field(None, max_length=65536)
    session_id: Ident | None = Field(None, description="choose the id (it must not exist yet)")
    intent_classification: Name | None = None


class EvaluateIn(_Body):
    tool: Name
    operation: Name | None = None
    arguments: dict[str, Json] = Field(default_factory=dict)


class ActionIn(EvaluateIn):
    wait: float = Field(0.0, ge=0, le=60, description="seconds to wait for allowed/denied before answering 202")
    depends_on: list[Ident] = Field(default_factory=list, max_length=64,
                                    description="ids of earlier actions of this session this one needs")


class OutcomeIn(_Body):
    success: bool
    output: Json = None
    error: str | None = Field(None, max_length=4096)


class DelegateIn(_Body):
    to: Name = Field(description="the sub-agent (agent identity) the delegation is for")
    scope: list[Name] = Field(min_length=1, max_length=64, description="what it may act with (can only narrow)")
    ttl: float = Field(300.0, gt=0, le=86400, description="seconds (at most `identity.delegation.max_ttl`)")


class ContextIn(_Body):
    fields: dict[ContextName, Json] = Field(min_length=1, max_length=64)

    @field_validator("fields")
    @classmethod
    def _not_reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(set(v) & RESERVED)
        if bad:
            raise ValueError(f"context field `{bad[0]}` is reserved (a built-in fact or set by the server)")
        return v


#: "some character that is not white space" for every reader of this pattern: pydantic's regex (Unicode
#: White_Space, which counts U+0085), OpenAPI clients' ECMAScript one (which counts U+FEFF), and the desks'
#: own `str.strip()` check (Python's isspace, which also counts U+001C-U+001F: a reason of only those passed
#: the schema and was refused as empty, found by schemathesis)
REASON_PATTERN = r"[^\s\x1c-\x1f\x85\ufeff]"


class DecideIn(_Body):
    reason: str = Field(min_length=1, max_length=2000, pattern=REASON_PATTERN)


class RevocationIn(_Body):
    """An identity revocation (aarmor.identity.revocation): what it names, why, and optionally until when."""

    kind: Literal["token", "subject", "agent"] = Field(
        description="token: a token id (`jti`); subject: a human principal or service identity; agent")
    value: str = Field(min_length=1, max_length=MAX_VALUE, pattern=VALUE_PATTERN)
    reason: str = Field(min_length=1, max_length=MAX_REASON, pattern=REASON_PATTERN)
    until: str | None = Field(None, json_schema_extra={"format": "date-time"},
                              description="end of the revocation (RFC 3339, after now); default: for ever")


class SupplyIn(_Body):
    fields: dict[SuppliedName, Json] = Field(min_length=1, max_length=64)


def schemas() -> dict[str, Any]:
    """JSON Schemas of the request models, for the OpenAPI document's components."""
    out: dict[str, Any] = {"JsonValue": JSON_VALUE}
    for model in (IdentityIn, SessionIn, EvaluateIn, ActionIn, OutcomeIn, ContextIn, DecideIn, SupplyIn,
                  RevocationIn, DelegateIn):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    # pydantic writes key patterns as `patternProperties`, which does not forbid other keys: say it exactly
    for name in ("ContextIn", "SupplyIn"):
        spec = out[name]["properties"]["fields"]
        [(pattern, values)] = spec.pop("patternProperties").items()
        spec["propertyNames"] = {"pattern": pattern}
        spec["additionalProperties"] = values
    out["ContextIn"]["properties"]["fields"]["propertyNames"]["not"] = {"enum": sorted(RESERVED)}
    return {k: _json_refs(v) for k, v in out.items()}


def _json_refs(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("x-aarmor") == "json-value":
            return {"$ref": "#/components/schemas/JsonValue"}
        return {k: _json_refs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_json_refs(v) for v in node]
    return node
