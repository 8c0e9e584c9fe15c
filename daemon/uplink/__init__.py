"""Lattices and the cloud link: what leaves the device, and how each utterance is closed."""
