"""The test suite; a package so that tests import their helpers as ``tests.synthetic`` and ``tests.onnx_parity``."""
