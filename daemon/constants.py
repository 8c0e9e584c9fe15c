"""The numbers every part of the audio path agrees on, defined once."""

SAMPLE_RATE = 16000  # Hz: what the microphone path resamples to and the model was trained on
FRAME_SHIFT_S = 0.010  # seconds between feature frames (80-bin fbank, 25 ms windows)
