"""`workbench app` (the dashboard) and `workbench models` (the registry)."""
from __future__ import annotations

from workbench.cli.common import add_model


def cmd_app(args) -> int:
    from workbench.ui.layout import build_demo, launch
    launch(build_demo(model_name=args.model), args.host, args.port)
    return 0


def cmd_models(args) -> int:
    from workbench.models.registry import list_models
    for name, desc in list_models().items():
        print(f"{name:18s} {desc}")
    return 0


def add_parser(sub) -> None:
    a = sub.add_parser("app", help="launch the Gradio dashboard (offline)")
    add_model(a)
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=7860)
    a.set_defaults(func=cmd_app)

    m = sub.add_parser("models", help="list model presets")
    m.set_defaults(func=cmd_models)
