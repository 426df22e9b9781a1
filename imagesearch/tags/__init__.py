"""Tags: zero-shot labels. Each image keeps the labels of a vocabulary (a file of everyday words
shipped here, or the operator's) that its embedding fits clearly better than the rest.

- ``vocabulary``: the labels, from the shipped ``vocabulary.txt`` or ``IMAGESEARCH_TAG_VOCABULARY``;
- ``labels``: each label embedded once per model by its text tower, kept in the data folder;
- ``tagger``: how the labels an image keeps are chosen, and writing them to the store;
- ``counts``: the tags with how many images hold each (`GET /tags`); ``cli``: `imagesearch tags`.

Ingest tags (imagesearch/ingest/tagging.py): the embed worker of the default model tags what it
embeds, and images embedded earlier are tagged from their stored vectors. The stores keep the tags
on the record, filter by them (``SearchFilters.tags``), match them as keywords and count them.
"""

from imagesearch.tags.tagger import Tagger, make_tagger, tagging_model
from imagesearch.tags.vocabulary import DEFAULT_VOCABULARY, Vocabulary, VocabularyError, load_vocabulary

__all__ = ["DEFAULT_VOCABULARY", "Tagger", "Vocabulary", "VocabularyError", "load_vocabulary", "make_tagger", "tagging_model"]
