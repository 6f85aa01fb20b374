"""The detector and the filter's decision for each frame: the model behind the batcher, the frame
judge, and what lets it skip the model (the detection cache, the deferral hints)."""
