"""`python -m workbench.cli ARGS` = `workbench ARGS`."""
import sys

from workbench.cli import main

sys.exit(main())
