"""Settings every test shares."""

import itertools
import os

import pytest

import musicgen  # noqa: F401  (its TensorFlow settings, oneDNN on, before a test imports TensorFlow)

_tests = itertools.count()


@pytest.fixture(autouse=True, scope="session")
def session_corpus_cache(tmp_path_factory):
    """`musicgen train` caches encoded corpora: tests keep theirs in a temporary folder rather
    than the user's ~/.cache (this one serves fixtures shared by several tests)."""
    previous = os.environ.get("MUSICGEN_CACHE_DIR")
    folder = tmp_path_factory.mktemp("corpus-cache")
    os.environ["MUSICGEN_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("MUSICGEN_CACHE_DIR", None)
    else:
        os.environ["MUSICGEN_CACHE_DIR"] = previous


@pytest.fixture(autouse=True)
def corpus_cache(session_corpus_cache, monkeypatch):
    """Each test starts with an empty cache (created when first written), so what `train` prints
    does not depend on which tests ran before."""
    folder = session_corpus_cache / f"test-{next(_tests)}"
    monkeypatch.setenv("MUSICGEN_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(autouse=True)
def no_bundled_model(monkeypatch):
    """Tests see no bundled model unless they ask for one (MUSICGEN_BUNDLED_DIR empty means none):
    what `generate` does without a run must not depend on whether the package ships weights. The
    tests of a shipped model delete the variable themselves."""
    monkeypatch.setenv("MUSICGEN_BUNDLED_DIR", "")


@pytest.fixture(scope="session")
def oneills_file():
    """O'Neill's tunes 1 to 50 (music21's corpus), as the default corpus lists the file."""
    from musicgen.data.corpus import default_corpus_files

    return next(p for label, p in default_corpus_files() if "oneills1850/0001-0050" in label)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """A test that uses a `run_checks.training_fixture` trains a model: it is slow, like a test
    marked so itself (before `-m` selects)."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        definitions = info.name2fixturedefs.values() if info else ()
        if any(getattr(d.func, "trains_a_model", False) for ds in definitions for d in ds):
            item.add_marker(pytest.mark.slow)
