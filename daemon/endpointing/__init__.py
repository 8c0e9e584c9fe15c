"""End-pointing: the speculative and final end-pointers and the completeness rules they consult."""
