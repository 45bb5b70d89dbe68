"""The package never imports UI or notebook libraries (like panel/tests/test_imports.py)."""

import subprocess
import sys

FORBIDDEN = ("panel", "bokeh", "ipywidgets", "voila", "papermill", "IPython")

SCRIPT = """
import importlib, pkgutil, sys
import bluerocktel
names = [m.name for m in pkgutil.walk_packages(bluerocktel.__path__, "bluerocktel.")
         if ".migrations" not in m.name and not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
forbidden = %r
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(forbidden))
print(len(names), ",".join(loaded))
"""


def test_importing_every_module_of_the_package_loads_no_ui_library():
    out = subprocess.run([sys.executable, "-c", SCRIPT % (FORBIDDEN,)], capture_output=True, text=True, check=True)
    count, loaded = out.stdout.strip().split(" ", 1) if " " in out.stdout.strip() else (out.stdout.strip(), "")
    assert int(count) >= 10
    assert loaded == "", f"the package imported {loaded}"
