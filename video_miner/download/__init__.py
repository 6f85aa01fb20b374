"""Making each input a local video file: yt-dlp (with its checked options and JS runtime), object
stores through fsspec, politeness per host."""
