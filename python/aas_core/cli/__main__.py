"""``python -m aas_core.cli ...`` (also what ``torchrun -m aas_core.cli train`` runs)."""

import sys

from . import main

sys.exit(main())
