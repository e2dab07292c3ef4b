"""The data path: the request carrier, Qdrant's envelope, admission, the per-colour request form, the app, the upstream pool, the HTTP protocol limits, text in and shadow reads."""
