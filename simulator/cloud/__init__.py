"""The cloud: `edge-asr cloud`, which rescores device lattices with its language models
(n-gram and LSTM) and reads the intent, and nothing of the device's audio."""
