"""The daemon's events, contexts and status to and from their gRPC messages
(protos/edge_asr.proto)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge_asr.daemon.api.notices import Notice
from edge_asr.daemon.api.proto import edge_asr_pb2
from edge_asr.daemon.pipeline import Event, EventType
from edge_asr.daemon.uplink.lattice import to_proto as lattice_to_proto

_EVENT_TYPES = {t: edge_asr_pb2.EventType.Value(t.name) for t in EventType}
_CONTEXT_KINDS = ("contacts", "devices", "phrases")


def event_to_proto(event: Event | Notice, dropped_before: int = 0) -> edge_asr_pb2.Event:
    if isinstance(event, Notice):
        return notice_to_proto(event, dropped_before)
    message = edge_asr_pb2.Event(
        type=_EVENT_TYPES[event.type], utterance_id=event.utterance_id,
        revision=event.revision, text=event.text, stable_prefix=event.stable_prefix,
        audio_time=event.audio_time, wall_time=event.wall_time, reason=event.reason,
        dropped_partials_before=dropped_before, score=event.score)
    message.nbest.extend(edge_asr_pb2.NbestEntry(text=text, score=score)
                         for text, score in event.nbest)
    if event.speech_start is not None:
        message.speech_start = event.speech_start
    if event.lattice is not None:
        message.lattice.CopyFrom(lattice_to_proto(event.lattice))
    if event.intent:
        message.intent.name = event.intent
        message.intent.slots.update(event.slots)
    return message


def notice_to_proto(notice: Notice, dropped_before: int = 0) -> edge_asr_pb2.Event:
    return edge_asr_pb2.Event(
        type=edge_asr_pb2.EventType.Value(notice.type.value), audio_time=notice.audio_time,
        wall_time=notice.wall_time, reason=notice.reason, overruns=notice.overruns,
        lost_audio_s=notice.lost_audio_s, dropped_partials_before=dropped_before)


def context_from_proto(lists: edge_asr_pb2.ContextLists) -> dict[str, list[str]]:
    return {kind: list(getattr(lists, kind)) for kind in _CONTEXT_KINDS}


_STATUS_FIELDS = {f.name for f in edge_asr_pb2.Status.DESCRIPTOR.fields} - {"counters"}


def status_to_proto(values: Mapping[str, Any]) -> edge_asr_pb2.Status:
    """Known keys fill their fields; any other number goes into `counters`."""
    message = edge_asr_pb2.Status()
    for key, value in values.items():
        if value is None:
            continue
        if key in _STATUS_FIELDS:
            field = edge_asr_pb2.Status.DESCRIPTOR.fields_by_name[key]
            is_text = field.type == field.TYPE_STRING
            setattr(message, key, str(value) if is_text else type(getattr(message, key))(value))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            message.counters[key] = float(value)
    return message
