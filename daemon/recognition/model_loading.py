"""What a Recognizer loads beside the transducer's graphs (transducer.py loads those): the
device LM, one per LM folder in the process, and the context builder, which spells contexts
with the model folder's bpe.model.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from edge_asr.daemon.recognition.config import RecognizerConfig
from edge_asr.daemon.recognition.context_graph import ContextBuilder
from edge_asr.daemon.recognition.ngram_lm import LmFormatError
from edge_asr.daemon.recognition.token_lm import LM_FILE, LM_FILES, TokenLM
from edge_asr.daemon.recognition.transducer import (
    PACKED_SUFFIX,
    ModelError,
    TransducerModel,
    read_model_file,
)


@functools.lru_cache(maxsize=4)
def _load_token_lm(folder: Path, versions: tuple, tokens: tuple[str, ...]) -> TokenLM:
    """One TokenLM per LM folder (and version of its files, `_lm_versions`) in the process:
    it takes a second to load and is read-only but for its cache, which streams of several
    threads may share."""
    return TokenLM.load(folder, tokens)


def _lm_versions(folder: Path) -> tuple:
    """What tells one version of a folder's LM files from another: each file's modification
    time and size (None for a file that is not there)."""
    out = []
    for name in LM_FILES:
        try:
            stat = (folder / name).stat()
            out.append((name, stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            out.append((name, None))
    return tuple(out)


def load_device_lm(model: TransducerModel, needed_by: str) -> TokenLM:
    """The model folder's device LM, shared by every user in the process (`needed_by` names
    the user in the error when the LM is missing)."""
    path = model.dir / LM_FILE  # its sha256 was checked with the model's files
    if not path.is_file():
        raise ModelError(f"{model.dir}: no {LM_FILE}, which {needed_by} needs "
                         "(python -m edge_asr.models.device_lm makes it)")
    try:
        folder = model.dir.resolve()
        return _load_token_lm(folder, _lm_versions(folder), tuple(model.tokens))
    except LmFormatError as e:
        raise ModelError(f"{path}: not a device LM for this model: {e}") from e


def load_context_builder(model: TransducerModel, config: RecognizerConfig,
                         slot_words: Iterable[str]) -> ContextBuilder:
    """The context builder of the model folder's bpe.model (plain or packed), checked to
    spell with the model's own tokens; ModelError if it is missing or another model's."""
    path = model.dir / "bpe.model"
    if not path.is_file() and not path.with_name(path.name + PACKED_SUFFIX).is_file():
        raise ModelError(f"{model.dir}: no bpe.model, which contextual biasing "
                         "needs to spell the context (export it beside tokens.txt)")
    proto = read_model_file(model.dir, "bpe.model")  # plain or packed
    try:
        builder = ContextBuilder(proto, config.context_bonus, sorted(slot_words),
                                 config.context_slot_bonus, config.context_slot_bonus_large)
    except (OSError, RuntimeError) as e:
        raise ModelError(f"{path}: not a sentencepiece model: {e}") from e
    pieces = [builder.sp.id_to_piece(i) for i in range(builder.sp.get_piece_size())]
    if pieces != model.tokens:
        raise ModelError(f"{path}: its pieces differ from tokens.txt (another model's?)")
    return builder
