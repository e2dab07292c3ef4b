"""Embedding backends: local models and OpenAI-compatible services, batched and cached."""
