"""Every notebook that nbmake runs (`pytest notebooks --nbmake`) carries the `notebook` marker,
so that `pytest -m "not notebook"` leaves them out whatever paths it is given."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)
