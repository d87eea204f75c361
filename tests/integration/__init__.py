"""Integration tier (real services: chDB). A package, so that its conftest is ``integration.conftest`` and does not
replace the ``conftest`` module that tests under tests/unit import helpers from."""
