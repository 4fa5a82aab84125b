"""Errors of the data loaders that tell the user what to put where."""

import os


class DataFileNotFoundError(FileNotFoundError):
    """A dataset file is missing; the message says which file, where, and how to get it."""


class DataFormatError(ValueError):
    """A dataset file exists but is not in the expected format."""


def require_file(root, candidates, dataset, how_to_get):
    """Return the first of ``candidates`` (names inside ``root``) that exists, or raise
    DataFileNotFoundError naming all of them, the folder, and ``how_to_get``."""
    if root is None:
        raise DataFileNotFoundError(
            f"{dataset}: no data folder given. Put the files in a folder and pass it as "
            f"--data-dir DIR (Python: root=DIR). {how_to_get}"
        )
    for name in candidates:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    wanted = " or ".join(candidates)
    raise DataFileNotFoundError(
        f"{dataset}: missing file {wanted} in {os.path.abspath(root)}. {how_to_get}"
    )
