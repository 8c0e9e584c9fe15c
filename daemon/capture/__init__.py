"""Audio input: microphones, files and pushed audio, resampled to 16 kHz into a ring buffer."""
