"""Launch the workbench app (offline): `python app.py [--host HOST] [--port PORT]` or `make app`.

Where it listens: the flags first, then gradio's own `GRADIO_SERVER_NAME` / `GRADIO_SERVER_PORT` (how gradio apps
are run in containers and on shared hosts), then 127.0.0.1:7860.
"""
import argparse

import workbench  # noqa: F401  (offline environment before gradio is imported)
from workbench.cli.validate import check_args, exit_on_input_error, server_address
from workbench.ui.layout import build_demo, launch

demo = build_demo()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="app.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default=None, help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    args = p.parse_args(argv)
    check_args(p, args)
    launch(demo, *exit_on_input_error(lambda: server_address(args.host, args.port)))


if __name__ == "__main__":
    main()
