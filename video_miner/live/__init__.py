"""Live sources (cameras, streams, capture devices): a reader thread per source, and the hub that
hands their sampled frames to the live pipeline and records each connection as a segment."""
