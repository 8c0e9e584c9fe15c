"""Public speech corpora in their published layouts into `Utterance`s: `read_corpus` picks
the layout's reader, and this docstring is what every reader promises.

    read_corpus("librispeech", "LibriSpeech/train-clean-100")

Every reader normalises the transcript with `normalize_text` (ARCHITECTURE.md's one)
and skips utterances whose normalised text is empty, since there is nothing to learn from or
score. Malformed lines raise ValueError naming the file and line; a listed audio file that is
missing raises FileNotFoundError naming the path, so a half-copied corpus fails at once rather
than in the middle of writing a set (VCTK, whose published transcripts and audio do not pair
up fully, and the paired-text layout skip unpaired files instead). Audio is only located here,
never read: `write_set` and `load_utterance` in real_speech.py read it (mono, 16 kHz).

Layouts (readers in corpus_folder_readers.py, and for NeMo and Lhotse manifests
corpus_manifest_readers.py):
  kaldi        a Kaldi data directory (corpus_utterance.read_kaldi_dir)
  librispeech  <root>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt + <utt>.flac
  commonvoice  <root>/<train|dev|test|validated...>.tsv + <root>/clips/<path>
  nemo         a NeMo JSON-lines manifest (audio_filepath, text, duration, offset, speaker)
  lhotse       Lhotse recordings + supervisions manifests (.jsonl or .jsonl.gz)
  lhotse-cuts  a Lhotse CutSet manifest of MonoCuts (.jsonl or .jsonl.gz)
  speech-commands  Google Speech Commands: <root>/<word>/<speakerhash>_nohash_<n>.wav
  vctk         <root>/txt/<spk>/<spk>_<n>.txt + <root>/wav48*/<spk>/<spk>_<n>[_mic1].wav|flac
  paired-text  one speaker's <name>.wav + <name>.txt pairs at any depth (Rhasspy voices)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_asr.models.corpus_folder_readers import (
    read_common_voice,
    read_librispeech,
    read_paired_text,
    read_speech_commands,
    read_vctk,
)
from edge_asr.models.corpus_manifest_readers import (
    read_lhotse,
    read_lhotse_cuts,
    read_nemo_manifest,
)
from edge_asr.models.corpus_utterance import Utterance, read_kaldi_dir


def _lhotse_pair(path: Path | str, supervisions: Path | str | None = None,
                 **kw: Any) -> list[Utterance]:
    """read_lhotse from a recordings manifest (or a folder holding one); the supervisions
    manifest, unless given, is the one named alike with `supervisions` for `recordings`."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*recordings*.jsonl*"))
        if len(found) != 1:
            raise ValueError(f"{path}: {len(found)} *recordings*.jsonl(.gz) files; "
                             "name the recordings manifest itself")
        path = found[0]
    if supervisions is None:
        if "recordings" not in path.name:
            raise ValueError(f"{path}: cannot tell the supervisions manifest from this name; "
                             "give supervisions=")
        supervisions = path.with_name(path.name.replace("recordings", "supervisions"))
    return read_lhotse(path, supervisions, **kw)


def _kaldi(path: Path | str, corpus: str = "kaldi", root: Path | str | None = None
           ) -> list[Utterance]:
    return read_kaldi_dir(Path(path), corpus, root=Path(root) if root is not None else None)


READERS: dict[str, Callable[..., list[Utterance]]] = {
    "kaldi": _kaldi,
    "librispeech": read_librispeech,
    "commonvoice": read_common_voice,
    "nemo": read_nemo_manifest,
    "lhotse": _lhotse_pair,
    "lhotse-cuts": read_lhotse_cuts,
    "speech-commands": read_speech_commands,
    "vctk": read_vctk,
    "paired-text": read_paired_text,
}


def read_corpus(kind: str, path: Path | str, **kw: Any) -> list[Utterance]:
    """The utterances of the corpus at `path` in layout `kind` (one of READERS).

    `path` is what the layout's reader takes first: the Kaldi data directory, the LibriSpeech
    or Common Voice folder, the NeMo or cuts manifest, or for "lhotse" the recordings manifest
    (or its folder), whose supervisions manifest is found by name unless `supervisions=` is
    given; the Speech Commands, VCTK or paired-text folder. Other keywords go to the reader
    (corpus=, tsv=, root=, mic=).
    """
    if kind not in READERS:
        raise ValueError(f"unknown corpus layout {kind!r}; one of {', '.join(READERS)}")
    return READERS[kind](path, **kw)
