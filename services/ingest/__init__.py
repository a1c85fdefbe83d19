"""The detection path: detections topic -> dedup -> ticket commands -> event store."""
