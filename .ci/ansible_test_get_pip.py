"""Offline stand-in for ansible-test's get-pip bootstrap script.

ansible-test bootstraps pip in its sanity venvs by downloading get-pip.py from a host this
machine cannot reach. This stand-in does the same job with the venv's own ensurepip and then
``pip install`` from the configured package index. The Makefile copies it to
``~/.ansible/test/cache/get_pip_<version>.py``, the path ansible-test looks at first.
"""

import runpy
import subprocess
import sys

# In a child process: ensurepip points PIP_CONFIG_FILE at /dev/null for itself, and the
# machine's pip configuration (index, CA bundle) is needed by the install below.
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.argv = ["pip", "install"] + args
runpy.run_module("pip", run_name="__main__", alter_sys=True)
