"""edge-asr device runtime."""
