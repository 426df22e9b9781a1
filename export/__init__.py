"""Models (open_clip, BLIP-2) -> checked ONNX files in a Triton model repository (needs the `export`
extra: torch, open_clip_torch, onnx). ``pipeline.export_model`` runs an export, ``cli`` is
`imagesearch export`; importing the package itself loads none of those libraries."""
