"""The Gradio app: `layout.py` builds the Blocks, `callbacks.py` holds plain functions over the package."""
