"""One module per stage: download -> extract -> filter -> collect."""
