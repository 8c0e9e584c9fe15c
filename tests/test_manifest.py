"""The manifest reader: the documented keys, contexts as a list or by kind, clear errors."""

import pytest

from edge_asr.daemon.manifest import read_manifest, write_manifest


def test_paths_resolve_against_the_manifest_and_other_keys_are_kept(tmp_path):
    write_manifest(tmp_path / "m.jsonl", [
        {"audio_filepath": "a.wav", "text": "call ziggy", "context": ["Ziggy"], "voice": "v"},
        {"audio_filepath": "/abs/b.wav", "context": {"contacts": ["Ziggy"],
                                                     "devices": ["the lava lamp"]}},
    ])
    a, b = read_manifest(tmp_path / "m.jsonl")
    assert a.audio_filepath == str(tmp_path / "a.wav") and b.audio_filepath == "/abs/b.wav"
    assert a.context == ["Ziggy"] and a.context_names == ["Ziggy"] and a.extra == {"voice": "v"}
    assert b.context == {"contacts": ["Ziggy"], "devices": ["the lava lamp"]}
    assert b.context_names == ["Ziggy", "the lava lamp"]
    # as SetContext takes them: a list without kinds fills name slots, as contacts do
    assert a.context_by_kind == {"contacts": ["Ziggy"]}
    assert b.context_by_kind == {"contacts": ["Ziggy"], "devices": ["the lava lamp"]}


@pytest.mark.parametrize("line, message", [
    ('{"audio_filepath": "a.wav", "context": "Ziggy"}', "m.jsonl:2: 'context' must be a list"),
    ('{"audio_filepath": "a.wav", "context": {"contacts": "Ziggy"}}',
     "m.jsonl:2: 'context' by kind needs a list for each kind"),
    ('{"text": "stop"}', "m.jsonl:2: each line needs an 'audio_filepath'"),
    ('{"audio_filepath": ', "m.jsonl:2: not valid JSON"),
])
def test_bad_lines_are_named(tmp_path, line, message):
    (tmp_path / "m.jsonl").write_text('{"audio_filepath": "ok.wav"}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        read_manifest(tmp_path / "m.jsonl")
