"""hypersal: hypernetwork saliency models, trained in sweeps on Slurm clusters.

Install for development (the layout expects an editable install: experiment.py, train.py,
templates/ and shared/ are read from this checkout):
    python3 -m venv .venv && .venv/bin/pip install -e ".[dev]"
The browser tests of the sweep page also need Debian's chromium and its driver:
    sudo apt-get install -y chromium chromium-driver
"""
from setuptools import find_packages, setup

setup(
    name="hypersal",
    version="0.1.0",
    description="Hypernetwork saliency models and a Slurm sweep orchestrator",
    packages=find_packages(include=["hypersal", "hypersal.*"]),
    package_data={"hypersal.experiment": ["report.html"]},   # the sweep page's template
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.2",
        "torchvision>=0.17",
        "addict>=2.4",
        "pyyaml>=6.0",
        "jinja2>=3.1",
        "comet_ml>=3.40",
        "gitpython>=3.1",
        "numpy>=1.24",
        "pillow>=10",
        # cv2.saliency (spectral residual, fine grained) for task synthesis. The *contrib* build:
        # a package pulling plain opencv-python-headless would overwrite it, and cv2.saliency with it.
        "opencv-contrib-python-headless>=4.8",
        # Adaptive sweeps (hypersal/search/__init__.py): samplers, pruners, ask-and-tell, and the journal
        # storage in a file (optuna.storages.journal.JournalFileBackend, new in 4.0).
        "optuna>=4.0",
        # The benchmarks' .mat fixation files (hypersal.data.convert: SALICON, CAT2000).
        "scipy>=1.10",
        # The sweep page (experiment.py report): parallel coordinates and curves, plotly.js inlined
        # (plotly.offline.get_plotlyjs) so that the page opens offline.
        "plotly>=5.0",
        # ISA-L's deflate for the run stage's map PNGs (hypersal/data/png.py): 0.15 ms a 480x640 map
        # where zlib's level 1 took 0.8, same pixels. Binary wheels (1.9.1: CPython 3.11 manylinux
        # x86_64 and aarch64, checked), so one `pip install` on a fresh machine, no compiler.
        "isal>=1.6",
    ],
    extras_require={"dev": [
        # pytest 9 names a test by Node._id; pytest-xdist 3.8 still puts its --dist loadgroup group
        # into Node._nodeid, which pytest 9 no longer reads: the Slurm tests then ran in both
        # processes at once (tests/conftest.py). Lift the pin when xdist follows.
        "pytest>=8,<9",
        "pytest-timeout>=2",
        "pytest-xdist>=3.5",     # the suite in one process per core; --dist loadgroup keeps the Slurm tests in one
        # The independent reference the metric tests compare against (the Tuebingen benchmark's
        # code). It still imports pkg_resources, which setuptools 81 removed.
        "pysaliency==0.2.22",
        "setuptools<81",
        # The study: scikit-image's bundled photographs (hypersal.data.photos) and its plots.
        "scikit-image>=0.22",
        "matplotlib>=3.7",
        # Reads an adaptive sweep's journal (tests/test_search.py checks that it does).
        "optuna-dashboard>=0.15",
        # Drives Debian's chromium (tests/helpers/browser.py) through the chromedriver on PATH; 4.10+ takes
        # Service(executable_path=...), so its driver manager never downloads a browser.
        "selenium>=4.10",
        # Checks `experiment.py schema` as an editor would (tests/test_editor_schema.py, test_docs.py).
        "jsonschema>=4.18",
    ]},
)
