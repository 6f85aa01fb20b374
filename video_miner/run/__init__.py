"""One run, composed: the request, the output folder's preparation, the engine (local or Ray) that
runs the stages, the event loop with its timers and signals, the export and the report."""
