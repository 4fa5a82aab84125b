"""`import pixelar` and `pixelar --help` stay light: the heavy optional packages (Triton,
matplotlib, scikit-learn, SciPy, TensorBoard) load only when a command uses them."""

import subprocess
import sys

HEAVY = {"triton", "matplotlib", "sklearn", "scipy", "tensorboard", "torch.utils.tensorboard"}

CODE = """
import sys
import pixelar, pixelar.models, pixelar.ops, pixelar.data, pixelar.cli
try:
    pixelar.cli.main(['--help'])
except SystemExit:
    pass
print('MODULES', ' '.join(sorted(sys.modules)))
"""


def test_import_and_help_load_no_heavy_package():
    out = subprocess.run(
        [sys.executable, "-c", CODE], check=True, capture_output=True, text=True, timeout=300
    )
    loaded = set(out.stdout.split("MODULES", 1)[1].split())
    assert "pixelar.cli" in loaded
    assert not loaded & HEAVY, sorted(loaded & HEAVY)
