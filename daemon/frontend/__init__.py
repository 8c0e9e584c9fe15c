"""Features and voice activity: 80-bin fbank frames and the gated WebRTC VAD."""
