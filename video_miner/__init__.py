"""video-miner: turn videos into clean, labelled, deduplicated image datasets."""

__version__ = "0.1.0"
