"""``python -m pixelar`` (and ``torchrun ... -m pixelar train``): the pixelar command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
