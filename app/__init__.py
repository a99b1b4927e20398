"""AI Music Mastering Chain: a desktop DAW with offline mastering and an AI model chain."""

__version__ = "0.1.0"
