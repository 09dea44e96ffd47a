"""Integration tests (marked `integration`): run in the second environment that .ci/run builds (torch with
torchvision, timm, ultralytics). Where those packages are missing the tests skip."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
