"""Run the command line with ``python -m mlflow_hpo``."""

import sys

from mlflow_hpo.cli import main

sys.exit(main())
