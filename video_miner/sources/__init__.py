"""Inputs that are not files to download once: live streams and capture devices, read continuously
by one thread each (``live.py``), and folders that keep receiving videos (``watch.py``). The hub
(``hub.py``) hands the live frames to the live pipeline as they come and records each connection."""
