"""Launch the workbench app (offline): `python app.py` or `make app`."""
import workbench  # noqa: F401  (offline environment before gradio is imported)
from workbench.ui.layout import build_demo, launch

demo = build_demo()

if __name__ == "__main__":
    launch(demo)
