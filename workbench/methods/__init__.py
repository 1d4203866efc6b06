"""Compression methods: each is pure tensor functions (ops/) plus a small `apply(model, cfg)`."""
