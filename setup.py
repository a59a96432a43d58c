"""Build hook: a wheel carries kpipe's data folders (kconfigs/, vm_images/, suites/, patches/) inside the package,
as kpipe/_data/, where kpipe/datadirs.py finds them. A checkout and an editable install read the top-level folders."""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_FOLDERS = ("kconfigs", "vm_images", "suites", "patches")


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in DATA_FOLDERS:
            self.copy_tree(os.path.join(HERE, name), os.path.join(self.build_lib, "kpipe", "_data", name))


setup(cmdclass={"build_py": BuildPyWithData})
