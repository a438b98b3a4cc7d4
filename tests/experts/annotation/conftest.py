"""A small dataset (3 training cases, one test case, 20^3 voxels of 2 mm) and an untrained toy
interactive model of its classes whose prompt weights are random, so that clicks change the mask."""

from __future__ import annotations

import shutil

import pytest

from toydata import make_toy_dataset
from toymodels import toy_interactive_model


@pytest.fixture(scope="session")
def small_dataset_master(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("annot") / "Small", n_train=3, n_test=1)


@pytest.fixture
def small_dataset(small_dataset_master, tmp_path):
    dst = tmp_path / "Small"
    shutil.copytree(small_dataset_master, dst)
    return dst


@pytest.fixture
def toy_model():
    return toy_interactive_model()
