"""Only the ``*_runner.py`` files here are pytest tests; the rest are cocotb modules that run
inside the simulator (started by those runners) and must not be imported by pytest."""


def pytest_ignore_collect(collection_path, config):
    return collection_path.suffix == ".py" and not collection_path.stem.endswith("_runner")
