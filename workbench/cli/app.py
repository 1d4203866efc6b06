"""`workbench app` (the dashboard) and `workbench models` (the registry)."""
from __future__ import annotations

from workbench.cli.common import add_model


def cmd_app(args) -> int:
    """Serve the dashboard where the flags say, else where GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say, else on
    127.0.0.1:7860 (`validate.server_address`)."""
    from workbench.cli.validate import server_address
    from workbench.ui.layout import build_demo, launch
    host, port = server_address(args.host, args.port)  # a bad environment value: InputError → exit 2
    launch(build_demo(model_name=args.model), host, port)
    return 0


def cmd_models(args) -> int:
    from workbench.models.registry import list_models
    for name, desc in list_models().items():
        print(f"{name:18s} {desc}")
    return 0


def add_parser(sub) -> None:
    a = sub.add_parser("app", help="launch the Gradio dashboard (offline)")
    add_model(a)
    a.add_argument("--host", default=None, help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    a.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    a.set_defaults(func=cmd_app)

    m = sub.add_parser("models", help="list model presets")
    m.set_defaults(func=cmd_models)
