"""Exporters: torch -> ONNX (cached on disk)."""
