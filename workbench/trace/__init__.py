"""One trace schema for every method: a long-format polars table + run metadata, written to one Parquet file."""
from workbench.trace.recorder import TraceRecorder, active_recorder, tracing
from workbench.trace.schema import TRACE_SCHEMA, empty_trace, read_trace, write_trace

__all__ = ["TRACE_SCHEMA", "TraceRecorder", "active_recorder", "tracing", "empty_trace", "read_trace", "write_trace"]
