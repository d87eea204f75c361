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
    try:
        jsonschema.validate(data, json_schema(SCHEMA))
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ProfileError(f"reference profile fails its schema at {where}: {exc.message}") from None


def load_profile(path: str | Path) -> ReferenceProfile:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such reference profile") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{path}: not a JSON reference profile ({exc})") from None
    validate_profile_dict(data)
    return ReferenceProfile.from_dict(data)


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
