"""Reference profiles on disk: JSON validated against ``schemas/reference_profile.schema.json``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import jsonschema

from driftline.engine.profile import ReferenceProfile
from driftline.errors import ProfileError
from driftline.schemas import json_schema

SCHEMA = "reference_profile.schema.json"


def validate_profile_dict(data: object) -> None:
    schema = json_schema(SCHEMA)
    first = next(iter(jsonschema.validators.validator_for(schema)(schema).iter_errors(data)), None)
    if first is not None:
        error = _specific(first)
        path = [str(p) for p in error.absolute_path]
        where = "/".join(path) or "(top level)"
        feature = path[1] if len(path) >= 2 and path[0] == "features" else None
        message = error.message if len(error.message) <= 300 else error.message[:300] + "…"
        raise ProfileError(f"fails the reference profile schema at {where}: {message}", feature=feature,
                           **_names(data)) from None


def _specific(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For a feature that fits neither the numeric nor the categorical form (``oneOf``), the error of the
    form its ``kind`` names, rather than the whole feature printed back."""
    if not error.context:
        return error
    instance = error.instance if isinstance(error.instance, dict) else {}
    kind = instance.get("kind")
    if kind not in ("numeric", "categorical"):
        return jsonschema.ValidationError(f"kind must be numeric or categorical, got {kind!r}",
                                          path=[*error.absolute_path, "kind"])
    # the branch that names another kind fails on ``kind``; the other branch's errors are the real ones
    branches: dict[int, list[jsonschema.ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0] if sub.relative_schema_path else 0, []).append(sub)
    for subs in branches.values():
        if not any(list(e.relative_path) == ["kind"] for e in subs):
            return _specific(max(subs, key=lambda e: len(e.absolute_path)))
    return error


def _names(data: object) -> dict[str, str | None]:
    """The model and version a profile says it is, where it says so (for an error message)."""
    mapping = data if isinstance(data, dict) else {}
    return {k: str(mapping[k]) if isinstance(mapping.get(k), (str, int)) else None for k in ("model", "model_version")}


def load_profile(path: str | Path) -> ReferenceProfile:
    """Read, validate and check a profile file; every error names the file (and, where known, the model,
    version and feature)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such reference profile") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{path}: not a JSON reference profile ({exc})") from None
    try:
        validate_profile_dict(data)
        return ReferenceProfile.from_dict(data)
    except ProfileError as exc:
        raise exc.at(str(path)) from None


def save_profile(profile: ReferenceProfile, path: str | Path) -> None:
    """Write atomically (temporary file, then rename), after validating against the schema."""
    path = Path(path)
    data = profile.to_dict()
    validate_profile_dict(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1, sort_keys=True, allow_nan=False)
        out.write("\n")
    os.replace(tmp, path)
