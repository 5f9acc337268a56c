"""Build script. The native extension (csrc/) is built here once it exists; until
then this only installs the pure-Python package, which runs on every backend's
PyTorch fallback."""

from setuptools import setup

setup()
