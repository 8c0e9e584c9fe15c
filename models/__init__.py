"""edge-asr training recipe and shipped models."""
