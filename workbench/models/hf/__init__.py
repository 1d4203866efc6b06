"""Hugging Face VLMs behind the workbench model protocol (see `workbench/models/hf/loading.py`)."""
