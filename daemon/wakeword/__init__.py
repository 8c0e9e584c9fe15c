"""The wake word: a keyword spotter in front of recognition."""
