"""open_clip -> ONNX export (needs the `export` extra: torch, open_clip_torch, onnx)."""
