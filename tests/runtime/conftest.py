from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def forge_image(docker_host):
    """Forge's CPU image on the session's engine: FORGE_TEST_FORGE_IMAGE names one already built
    (development), else it is built here from the project's Dockerfile on a locally made base."""
    given = os.environ.get("FORGE_TEST_FORGE_IMAGE")
    if given:
        return given
    from docker_support import engine_env

    from runtime.image_support import build_test_image

    with engine_env(docker_host.host):
        return build_test_image()
