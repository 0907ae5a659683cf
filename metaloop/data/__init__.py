"""The data layer: where data is read from and cached, and one file per source of it.

- :mod:`~metaloop.data.root`: the data root (``METALOOP_DATA``, then ``~/.cache/metaloop/data``), the cache folder,
  and the stamp that makes in-process caches notice an edited user file;
- :mod:`~metaloop.data.download`: the catalogue of datasets and ``metaloop data download NAME``;
- :mod:`~metaloop.data.tables`: the user's CSV and JSON-lines files, read and checked one way;
- :mod:`~metaloop.data.texts`: labelled texts, the user's text files, mixes of sources;
- the text sources :mod:`~metaloop.data.clinc150`, :mod:`~metaloop.data.hwu64`, :mod:`~metaloop.data.huffpost`,
  :mod:`~metaloop.data.fewrel` (their class splits in ``splits/``), by name in :mod:`~metaloop.data.sources`;
  :mod:`~metaloop.data.tokens`: texts as token ids, cached;
- :mod:`~metaloop.data.labelled`, :mod:`~metaloop.data.images`: labelled examples stacked in one tensor, images
  decoded into them; :mod:`~metaloop.data.cache`: the safetensors cache of decoded tensors;
- the image sources :mod:`~metaloop.data.omniglot`, :mod:`~metaloop.data.miniimagenet` and the user's folders and
  CSV files (:mod:`~metaloop.data.folder`); the text of :mod:`~metaloop.data.shakespeare`;
- :mod:`~metaloop.data.smollm2`: the pretrained LLM's weights, offline.

What becomes a task, and how episodes are drawn, is :mod:`metaloop.tasks`.
"""

from metaloop.data.clinc150 import clinc150_split
from metaloop.data.download import how_to_get
from metaloop.data.fewrel import fewrel_split
from metaloop.data.huffpost import huffpost_split
from metaloop.data.hwu64 import hwu64_split
from metaloop.data.root import CACHE_ENV, DATA_ENV, cache_dir, data_root, file_stamp
from metaloop.data.smollm2 import SMOLLM2, lm_path
from metaloop.data.sources import TEXT_SOURCES, source_names, text_sources
from metaloop.data.texts import LabelledTexts, mixed, table_texts, text_file

__all__ = [
    "CACHE_ENV", "DATA_ENV", "SMOLLM2", "TEXT_SOURCES", "LabelledTexts", "cache_dir", "clinc150_split", "data_root",
    "fewrel_split", "file_stamp", "how_to_get", "huffpost_split", "hwu64_split", "lm_path", "mixed", "source_names",
    "table_texts", "text_file", "text_sources",
]
