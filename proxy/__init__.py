"""bluegreen-proxy: blue/green traffic splitting for the Qdrant REST API (I/O side)."""
