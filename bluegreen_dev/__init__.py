"""Development tools, kept out of the production install: the embedded Qdrant-compatible upstream
(qdrant-edge) and the demo. They need the `demo` extra: `pip install "bluegreen-proxy[demo]"`."""
