"""``python -m pixelar`` (and ``torchrun ... -m pixelar train``): the pixelar command."""

from .cli import entry_point

if __name__ == "__main__":
    entry_point()
