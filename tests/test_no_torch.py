"""The runtime (encoders, tokenizer, preprocessing, store, search, ingest, API, UI) never imports torch,
nor Ray (the ``ray`` extra, for `imagesearch ingest --ray` only)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_runtime_imports_and_runs_with_torch_unimportable(test_model_repo, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith(("torch.", "open_clip", "torchvision")):
                    raise ImportError("torch is blocked in this test")
                if name == "ray" or name.startswith("ray."):
                    raise ImportError("ray is blocked in this test")
        sys.meta_path.insert(0, BlockTorch())
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch imported: the block does not work")

        import numpy as np
        from tests.support.shapes import dataset
        from imagesearch.config import Settings
        from imagesearch.encoders import make_encoder
        from imagesearch.preprocess import prepare
        from imagesearch.search import SearchService
        import imagesearch.ingest.cli, imagesearch.ingest.embed, imagesearch.ingest.folder, imagesearch.search.cli
        import imagesearch.status, imagesearch.removal, imagesearch.stores.elasticsearch.cli
        # every service and adapter: any import error fails the test, whatever it names
        import imagesearch.api.app, imagesearch.api.cli, imagesearch.ui.cli, imagesearch.ingest.downloader, imagesearch.run
        # the Ray stages import without Ray; imagesearch.ingest.ray_pipeline needs it (only `ingest --ray` imports it)
        import imagesearch.ingest.ray_stages, imagesearch.blobs.s3
        import imagesearch.encoders.triton, imagesearch.encoders.openvino
        import imagesearch.stores.elasticsearch, imagesearch.stores.local
        settings = Settings(model_repository=r"{test_model_repo}", model="shapes-tiny", data_dir=r"{tmp_path}")
        encoder = make_encoder(settings)
        images = dataset(1, seed=5)
        vectors = encoder.encode_images(np.stack([prepare(i.encode(), encoder.card) for i in images]))
        texts = encoder.encode_texts(["a red circle", "a blue square"])
        assert vectors.shape == (12, encoder.card.dim) and texts.shape == (2, encoder.card.dim)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        assert not any(m == "ray" or m.startswith("ray.") for m in sys.modules)
        from imagesearch.cli import main
        assert main(["ingest", "embed", "--ray", "127.0.0.1:1"]) == 1  # says how to get Ray (stderr)
        print("ok")
    """)
    env = {**os.environ, "IMAGESEARCH_DATA_DIR": str(tmp_path), "IMAGESEARCH_MODEL_REPOSITORY": str(test_model_repo),
           "IMAGESEARCH_MODEL": "shapes-tiny"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
    assert "--ray needs Ray" in result.stderr and "pip install 'imagesearch[ray]'" in result.stderr
