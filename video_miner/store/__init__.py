"""What a run keeps on disk: the registry (the only SQL), the lock, the work-folder layout and its
commit files, the manifest, crash-safe writes, safe names, and ``repair``."""
