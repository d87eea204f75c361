"""Canonical scoring events, columnar: what every source decodes into.

Sources hand decoded records (dicts) to an :class:`EventBuilder`, which validates each one, turns the
bad ones into :class:`BadEvent` (with where it came from and why) and builds one columnar
:class:`Events` batch from the rest. The contract: docs/events.md.
"""

from driftline.events.columns import (COMBINED, KIND_NAMES, REQUEST, RESPONSE, BadEvent, Events, events_from_dict,
                                      events_to_dict, refuse_future)
from driftline.events.positions import POSITION, Position, Source, Spot, no_positions, positions
from driftline.events.validation import (MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS, EventBuilder, InvalidEvent,
                                         json_error_reason, parse_event_time)

__all__ = ["COMBINED", "KIND_NAMES", "MAX_EVENT_TIME_MS", "MIN_EVENT_TIME_MS", "POSITION", "REQUEST", "RESPONSE",
           "BadEvent", "EventBuilder", "Events", "InvalidEvent", "Position", "Source", "Spot", "events_from_dict",
           "events_to_dict", "json_error_reason", "no_positions", "parse_event_time", "positions", "refuse_future"]
