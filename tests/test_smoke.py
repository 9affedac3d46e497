import matrix


def test_version_is_set() -> None:
    assert matrix.__version__
