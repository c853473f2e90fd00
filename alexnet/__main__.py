"""`python -m alexnet COMMAND ...`, the same as `alexnet COMMAND ...` (also under torchrun)."""

import sys

from alexnet.main import main

sys.exit(main())
