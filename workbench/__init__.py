"""Visual-token compression workbench: an instrumented reference TinyVLM plus STTF, ANC and SparseVLM.

Importing the package sets the offline environment (no telemetry, no hub look-ups) before gradio,
gradio_client or transformers are imported anywhere in the process.
"""
from workbench import _offline  # noqa: F401  (side effect: offline env defaults)

__version__ = "0.1.0"
