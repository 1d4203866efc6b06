"""Training: stage 1 (compression-aware pre-training) of the reference TinyVLM; later stages plug in here."""
