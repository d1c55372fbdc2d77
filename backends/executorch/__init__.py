"""ExecuTorch/XNNPACK lowering for Android: export, INT8 lowering, host verification and benchmark.

Heavy imports (executorch, torchao) happen inside functions; importing this package is cheap.
"""
