"""From decided frames to the dataset: the dedup priority, near-duplicate removal, the YOLO/COCO
export and manifest, and the gallery."""
