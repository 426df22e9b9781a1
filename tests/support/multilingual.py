"""A multilingual test model: open_clip's architecture with a Hugging Face XLM-RoBERTa text tower (as in
``xlm-roberta-base-ViT-B-32``), at test size, trained here on the coloured shapes with captions in
English, German and Japanese, and exported through ``imagesearch export --text-model``.

No model hub here, so its pieces are made locally:

- ``build_tokenizer(folder)``: an XLM-RoBERTa-style SentencePiece Unigram tokenizer (``<s>`` 0, ``<pad>`` 1,
  ``</s>`` 2, ``<unk>`` 3, ..., ``<mask>`` last), trained with ``tokenizers`` on the captions of every
  language and on a sample of many scripts, saved as transformers' ``XLMRobertaTokenizer`` folder.
- ``build_text_model(folder)``: that tokenizer and a tiny ``XLMRobertaConfig`` (config.json, no weights):
  what ``--text-model`` reads in place of the hub's ``xlm-roberta-base``.
- ``ensure_multilingual_model()``: trained once per version of this file (checkpoint, config, text model
  folder), exported once per version of the export code too; both kept in the test cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from pathlib import Path

from tests.support import shapes
from tests.support.test_model import DEFAULT_CACHE, _build_once, ensure_export, pixels_for

log = logging.getLogger(__name__)

SLUG = "shapes-multi"
ARCH = "shapes-multi"
# Names no hub has: the export must be given the folder (--text-model), as offline users do.
HF_NAME = "imagesearch-tests/xlm-roberta-shapes"
EMBED_DIM = 64
CONTEXT_LENGTH = 24
CONFIG = {
    "embed_dim": EMBED_DIM,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 4, "head_width": 32},
    "text_cfg": {"hf_model_name": HF_NAME, "hf_tokenizer_name": HF_NAME, "hf_pooler_type": "mean_pooler",
                 "hf_proj_type": "linear", "context_length": CONTEXT_LENGTH},
}
TEXT_TOWER = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
              "max_position_embeddings": CONTEXT_LENGTH + 2 + 8, "type_vocab_size": 1,
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # XLM-RoBERTa's first ids; <mask> comes last
VOCAB_SIZE = 1000  # at most: the trainer stops short of it on this small corpus
TRAIN_THREADS = 2
LR, TEXT_LR = 3e-3, 1e-3  # the peak learning rates: the English model's, and the transformers text tower's

# Each language's words for the shapes' colours and shapes, and its caption templates.
WORDS = {
    "en": ({"red": "red", "green": "green", "blue": "blue", "yellow": "yellow"},
           {"circle": "circle", "square": "square", "triangle": "triangle"}),
    # German adjectives follow the noun's gender and case: the templates name the form they need.
    "de": ({"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb"},
           {"circle": ("Kreis", "er"), "square": ("Quadrat", "es"), "triangle": ("Dreieck", "es")}),
    "ja": ({"red": "赤い", "green": "緑の", "blue": "青い", "yellow": "黄色い"},
           {"circle": "丸", "square": "四角", "triangle": "三角"}),
}
TEMPLATES = {
    "en": ("a {c} {s}", "a photo of a {c} {s}", "{c} {s}", "an image of a {c} {s}"),
    "de": ("ein {c}{nom} {s}", "ein Foto von einem {c}en {s}", "{c}{nom} {s}", "ein Bild von einem {c}en {s}"),
    "ja": ("{c}{s}", "{c}{s}の写真", "{c}{s}の画像", "{c}{s}のイラスト"),
}
LANGUAGES = tuple(TEMPLATES)

# A few sentences in many scripts, so the tokenizer has pieces for them (what the tokenizer tests encode).
SCRIPTS = """
Le café est très bon, merci beaucoup. Où est la gare ? Ça coûte vingt-cinq euros.
El niño comió una manzana roja. ¿Dónde está la playa? ¡Qué día tan bonito!
Zażółć gęślą jaźń. Příliš žluťoučký kůň úpěl ďábelské ódy. Tiếng Việt có dấu.
Привет, мир! Красный круг на синем фоне. Съешь же ещё этих мягких французских булок.
Γειά σου κόσμε. Ένας κόκκινος κύκλος σε μπλε φόντο. Καλημέρα σας.
مرحبا بالعالم. دائرة حمراء على خلفية زرقاء. شكرا جزيلا.
שלום עולם. עיגול אדום על רקע כחול. תודה רבה.
नमस्ते दुनिया। नीले पृष्ठभूमि पर लाल वृत्त। धन्यवाद।
你好，世界。蓝色背景上的红色圆圈。谢谢你。
こんにちは世界。青い背景に赤い丸。ありがとうございます。カタカナのテキスト。
안녕하세요 세계. 파란 배경에 빨간 원. 감사합니다.
สวัสดีชาวโลก วงกลมสีแดงบนพื้นหลังสีน้ำเงิน ขอบคุณมาก
emoji 😀 👍🏽 🐶 🏖️ 👨‍👩‍👧 🇯🇵 ❤️ ☕ — “quotes” ‘x’ … « » 1234567890 3.14 C++ & C# http://example.com/a?b=c
""".strip().splitlines()


def captions(colour: str, shape: str, language: str) -> list[str]:
    """Every caption of one class in one language (its templates)."""
    colours, nouns = WORDS[language]
    noun = nouns[shape]
    if language == "de":
        word, nominative = noun
        return [t.format(c=colours[colour], nom=nominative, s=word) for t in TEMPLATES[language]]
    return [t.format(c=colours[colour], s=noun) for t in TEMPLATES[language]]


def caption(colour: str, shape: str, language: str) -> str:
    """The plain caption: "a red circle", "ein roter Kreis", "赤い丸"."""
    return captions(colour, shape, language)[0]


def build_tokenizer(folder: Path, vocab_size: int = VOCAB_SIZE) -> Path:
    """An XLM-RoBERTa-style tokenizer trained on the captions and ``SCRIPTS``, as a transformers folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import XLMRobertaTokenizer

    texts = [c for colour, shape in shapes.CLASSES for lang in LANGUAGES for c in captions(colour, shape, lang)]
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()  # words as transformers' XLMRobertaTokenizer splits them
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), unk_token="<unk>",
                                      shrinking_factor=0.75)
    corpus = texts * 3 + SCRIPTS * 3
    tokenizer.train_from_iterator(corpus, trainer)
    trained = json.loads(tokenizer.to_str())["model"]["vocab"][len(SPECIAL_TOKENS):]
    # The same vocabulary and ids on every run: the trainer's scores differ in their last bits (it sums in
    # hash-map order), so they are rounded; and it appends the characters its pieces do not cover in
    # hash order, so every single character is instead scored here by its frequency.
    characters = Counter("".join(f"▁{word}" for text in corpus for word in text.split()))
    total = sum(characters.values())
    pieces = {piece: round(score, 6) for piece, score in trained if len(piece) > 1}
    pieces |= {char: round(math.log(count / total), 6) for char, count in characters.items()}
    ranked = sorted(pieces.items(), key=lambda item: (-item[1], item[0]))
    folder = Path(folder)
    XLMRobertaTokenizer(vocab=[(t, 0.0) for t in SPECIAL_TOKENS] + ranked + [("<mask>", 0.0)]).save_pretrained(folder)
    return folder


def build_text_model(folder: Path, **sizes) -> Path:
    """The text model folder ``--text-model`` reads: the tokenizer and an XLM-RoBERTa config (no weights)."""
    from transformers import AutoTokenizer, XLMRobertaConfig

    tokenizer = AutoTokenizer.from_pretrained(build_tokenizer(folder))
    XLMRobertaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id, **(TEXT_TOWER | sizes)).save_pretrained(folder)
    return Path(folder)


def create(work: Path):
    """The open_clip model (random weights) with its text tower read from ``work / "text-model"``."""
    import open_clip

    from imagesearch.export.source import ExportOptions
    from imagesearch.export.sources.hf_text import create_kwargs

    open_clip.add_model_config(work / "config")
    options = ExportOptions(model=ARCH, text_model=work / "text-model")
    return open_clip.create_model(ARCH, pretrained=None, **create_kwargs(options))


def train(work: Path, steps: int = 700, seed: int = 0) -> dict:
    """The text model folder, the config and the trained checkpoint in ``work`` (CLIP-style training, as
    the English test model's, with a caption of a random language and template for each class)."""
    import open_clip
    import torch
    import torch.nn.functional as F

    from imagesearch.export.sources.open_clip import VisualTower

    build_text_model(work / "text-model")
    (work / "config").mkdir(exist_ok=True)
    (work / "config" / f"{ARCH}.json").write_text(json.dumps(CONFIG))
    torch.manual_seed(seed)
    torch.set_num_threads(TRAIN_THREADS)  # the same float sums on every machine, and deterministic kernels
    torch.use_deterministic_algorithms(True)
    model = create(work)
    tokenizer = open_clip.tokenizer.HFTokenizer(str(work / "text-model"), context_length=CONTEXT_LENGTH)
    cfg = open_clip.get_model_preprocess_cfg(model)
    visual = VisualTower(model, cfg["mean"], cfg["std"])

    train_set = shapes.dataset(n_per_class=600, seed=seed + 1)
    pixels = torch.from_numpy(pixels_for(train_set))
    labels = torch.tensor([shapes.CLASSES.index((s.colour, s.shape)) for s in train_set])
    prompts = [[c for lang in LANGUAGES for c in captions(colour, shape, lang)] for colour, shape in shapes.CLASSES]
    variants = len(prompts[0])  # captions per class: every template of every language
    tokens = tokenizer([p for group in prompts for p in group]).view(len(shapes.CLASSES), variants, -1)

    # Colour and shape heads on both towers (a training aid, not exported), as for the English model.
    n_colours = len(shapes.COLOURS)
    heads = torch.nn.ModuleDict(
        {tower: torch.nn.Linear(EMBED_DIM, n_colours + len(shapes.SHAPES)) for tower in ("image", "text")}
    )
    class_colour = torch.tensor([list(shapes.COLOURS).index(c) for c, _ in shapes.CLASSES])
    class_shape = torch.tensor([shapes.SHAPES.index(s) for _, s in shapes.CLASSES])

    def aux_loss(head: str, embeddings, classes) -> torch.Tensor:
        out = heads[head](embeddings)
        return F.cross_entropy(out[:, :n_colours], class_colour[classes]) + F.cross_entropy(
            out[:, n_colours:], class_shape[classes]
        )

    # The transformers tower (post-norm, as BERT) learns at a lower rate than the rest: at the ViT's rate
    # its captions of one colour can collapse into one embedding, the shape lost.
    transformer = set(map(id, model.text.transformer.parameters()))
    rest = [p for p in [*model.parameters(), *heads.parameters()] if id(p) not in transformer]
    optimizer = torch.optim.AdamW(
        [{"params": rest, "lr": LR}, {"params": list(model.text.transformer.parameters()), "lr": TEXT_LR}], weight_decay=0.05
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[LR, TEXT_LR], total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    all_classes = torch.arange(len(shapes.CLASSES))
    model.train()
    start, loss_value = time.monotonic(), float("nan")
    for _ in range(steps):  # a fixed number of steps: the same model on a busy or an idle machine
        idx = torch.randint(0, len(pixels), (128,), generator=generator)
        text = tokens[all_classes, torch.randint(0, variants, (len(shapes.CLASSES),), generator=generator)]
        image_emb = visual(pixels[idx])
        text_emb = model.encode_text(text, normalize=True)
        loss = (F.cross_entropy(image_emb @ text_emb.T * 20.0, labels[idx])
                + 0.5 * aux_loss("image", image_emb, labels[idx]) + 0.5 * aux_loss("text", text_emb, all_classes))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_value = float(loss.detach())
    model.eval()
    torch.save(model.state_dict(), work / "checkpoint.pt")
    figures = {"steps": steps, "loss": loss_value, "seconds": round(time.monotonic() - start, 1)}
    log.info("multilingual test model: %s", figures)
    (work / "training.json").write_text(json.dumps(figures))
    return figures


def _training_fingerprint() -> str:
    return hashlib.sha256(Path(__file__).read_bytes() + Path(shapes.__file__).read_bytes()).hexdigest()[:12]


def ensure_multilingual_model(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """A model repository with the trained, exported multilingual model (slug ``shapes-multi``, fp32). Its
    training folder (``text-model/``, ``config/``, ``checkpoint.pt``) is ``training_folder(repository)``."""
    from imagesearch.export.pipeline import export_model
    from imagesearch.export.source import ExportOptions
    from imagesearch.export.triton_config import TritonOptions

    cache_dir = Path(cache_dir)

    def build(folder: Path) -> None:
        trained = _build_once(cache_dir / f"multilingual-model-{_training_fingerprint()}", train)
        export_model(ExportOptions(model=ARCH, pretrained=str(trained / "checkpoint.pt"), slug=SLUG,
                                   model_config=trained / "config", text_model=trained / "text-model"),
                     folder / "models", triton_options=TritonOptions(kind="KIND_CPU", visual_max_batch=64, textual_max_batch=64))
        (folder / "trained").symlink_to(trained)

    return ensure_export("multilingual-shapes", build, cache_dir, extra_sources=[Path(__file__)]) / "models"


def training_folder(repository: Path) -> Path:
    """The folder the model of ``ensure_multilingual_model()``'s repository was trained and exported from."""
    return (Path(repository).parent / "trained").resolve()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(ensure_multilingual_model())
