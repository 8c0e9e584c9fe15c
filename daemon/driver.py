"""The one loop every audio stream runs: pieces -> pipeline -> finisher; and audio held in
memory (a file) cut into the microphone's 20 ms pieces.

The daemon's own source (service.py), each Recognize call (server.py) and `edge-asr eval`
(evaluate.py) drive a pipeline the same way: each piece's events go through a Finisher,
which closes every utterance with RESCORED or ON_DEVICE_FINAL; at the end of the audio
the pipeline is flushed, the finisher waits a while for the cloud's last answers and then
gives whatever still waits its on-device final, so no utterance is left open.

A driver with a front end (daemon/frontend/cleanup.py) cleans each piece before the
pipeline sees it: the device's own playback cancelled (with the reference that plays
beside the microphone), noise suppressed. The pipeline only ever hears the cleaned audio.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from edge_asr.daemon.capture.reference import FileReference
from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.frontend.cleanup import MicFrontEnd
from edge_asr.daemon.pipeline import Event, Pipeline
from edge_asr.daemon.recognition.recognizer import Context, Recognizer, Result
from edge_asr.daemon.uplink.finisher import Finisher

# Playback quieter than this (-60 dBFS) leaves no echo worth allowing for.
PLAYBACK_LEVEL = 1e-3


@dataclass
class StreamDriver:
    pipeline: Pipeline
    finisher: Finisher
    frontend: MicFrontEnd | None = None  # echo cancellation, noise suppression
    reference: FileReference | None = None  # the device's playback, beside the microphone
    cpu_seconds: float = 0.0  # this thread's CPU in front end and pipeline, for RTF
    audio_seconds: float = 0.0
    finished: bool = False

    def feed(self, piece: np.ndarray, reference: np.ndarray | None = None) -> list[Event]:
        """One piece of 16 kHz audio through the front end and the pipeline; its events,
        also passed to the finisher (which emits them, then the closing events as they are
        decided). `reference` is the playback of the same stretch of time; without it, the
        driver's own `reference` gives it."""
        if self.finished:
            raise RuntimeError("feed after finish")
        started = time.thread_time()
        if self.frontend is not None:
            if reference is None and self.reference is not None:
                reference = self.reference.take(len(piece))
            cleaned = self.frontend.process(piece, reference)
            playing = reference is not None and bool(np.any(np.abs(reference) > PLAYBACK_LEVEL))
            # a piece shorter than a 10 ms frame may leave nothing ready yet
            events = self.pipeline.accept(cleaned, playing, self.frontend.residual_echo) \
                if len(cleaned) else []
        else:
            events = self.pipeline.accept(piece)
        self.cpu_seconds += time.thread_time() - started
        self.audio_seconds += len(piece) / SAMPLE_RATE
        self.finisher.process(events)
        return events

    def interrupt(self) -> list[Event]:
        """The audio broke off (the device vanished) but the stream goes on later: the open
        utterance is closed now with what was heard, as at the end of the input. Returns the
        pipeline's events (also passed to the finisher)."""
        if self.finished:
            return []
        events = self.pipeline.finish()
        self.finisher.process(events)
        return events

    def feed_all(self, pieces: Iterable[np.ndarray]) -> list[Event]:
        return [event for piece in pieces for event in self.feed(piece)]

    def finish(self, wait_s: float) -> list[Event]:
        """End of the audio: the open utterance is closed, the cloud gets up to `wait_s`
        seconds to answer the utterances waiting for it, the rest close on the device.
        Returns the pipeline's last events. A second call does nothing."""
        if self.finished:
            return []
        self.finished = True
        events = []
        if self.frontend is not None:  # what waited for a whole 10 ms frame
            tail = self.frontend.flush()
            events += self.pipeline.accept(tail) if len(tail) else []
        events += self.pipeline.finish()
        self.finisher.process(events)
        self.finisher.wait_idle(wait_s)
        self.finisher.close()
        return events


PIECE_SECONDS = 0.02


def recognize_samples(recognizer: Recognizer, samples: np.ndarray,
                      on_partial=None, context: Context | None = None) -> Result:
    """Stream samples through a fresh stream in microphone-sized pieces; final result.

    `context` (the utterance's biasing list) is checked before any audio is decoded.
    """
    stream = recognizer.create_stream(context=context)
    piece = int(PIECE_SECONDS * SAMPLE_RATE)
    for start in range(0, len(samples), piece):
        stream.accept_waveform(SAMPLE_RATE, samples[start : start + piece])
        if recognizer.decode(stream) and on_partial is not None:
            on_partial(recognizer.result(stream), (start + piece) / SAMPLE_RATE)
    stream.input_finished()
    recognizer.decode(stream)
    return recognizer.result(stream)


def microphone_pieces(samples: np.ndarray) -> Iterator[np.ndarray]:
    """The samples in 20 ms pieces, as a microphone gives them."""
    piece = int(PIECE_SECONDS * SAMPLE_RATE)
    for start in range(0, len(samples), piece):
        yield samples[start : start + piece]


def run_pipeline(pipeline: Pipeline, samples: np.ndarray) -> list[Event]:
    """Feed samples in 20 ms pieces as a microphone would, then end the input (the
    pipeline's own events, without the finisher's closing ones)."""
    events: list[Event] = []
    for piece in microphone_pieces(samples):
        events += pipeline.accept(piece)
    return events + pipeline.finish()
