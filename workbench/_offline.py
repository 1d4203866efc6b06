"""Offline defaults for every entry point (app, CLI, tests, notebooks).

gradio, gradio_client and transformers otherwise try to reach the internet (version checks, telemetry,
hub retries of ~23 s per call). `setdefault` keeps an explicit user choice.
"""
import os

OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
for _k, _v in OFFLINE_ENV.items():
    os.environ.setdefault(_k, _v)
